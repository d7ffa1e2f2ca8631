"""Empty and over-long texts are not refused: they are counted per split in run.json (data.splits.S.text) and the
model sees the text cut at max_text_len tokens."""

from __future__ import annotations

from harness.batches import TextBatcher, text_issues
from pixelbert.tokenizer import load_tokenizer


def test_empty_and_over_long_texts_are_counted_and_cut() -> None:
    tokenizer = load_tokenizer()
    texts = ["is there a red circle?", "   ", "a " * 100 + "square"]
    assert text_issues(tokenizer, texts, max_length=16) == {"empty": 1, "truncated": 1, "max_length": 16}
    batch = TextBatcher(tokenizer, 16)(texts)
    assert batch["input_ids"].shape == (3, 16)
    assert int(batch["attention_mask"][1].sum()) == 2, "an empty text is [CLS] [SEP]"
