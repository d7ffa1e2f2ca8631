"""What makes a question, sentence or caption from a data file usable text.

Checked where the official files are read, so ``data check`` reports the same items ``run`` would stop on:
a lone surrogate (``"\\ud800"`` is valid JSON but no tokenizer can encode it) and text far beyond any
sentence (a 100 MB question takes the tokenizer minutes before it is cut to ``max_text_len`` tokens).
"""

from __future__ import annotations

# Far above any real question, statement or caption (VQA v2's longest question: about 100 characters; COCO's
# longest caption: about 1,000), and still tokenized in milliseconds.
MAX_TEXT_CHARS = 65_536


def text_problem(value: object, noun: str) -> str | None:
    """None for usable text; otherwise why not, naming it by ``noun`` (``"question text"``): empty or
    missing, too long, or not encodable."""
    if not isinstance(value, str) or not value.strip():
        return f"empty or missing {noun}"
    if len(value) > MAX_TEXT_CHARS:
        return f"{noun} is {len(value):,} characters long, more than vlbench reads ({MAX_TEXT_CHARS:,})"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"{noun} is not valid Unicode (a lone surrogate at character {exc.start})"
    return None
