"""The pre-training heads of one run, built for the objectives it uses."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from pixelbert.config import MVM_HEADS
from pixelbert.heads import ItmHead, MlmHead
from pixelbert.model import VisionLanguageModel
from pixelbert.soho.mvm import MvmHead

OBJECTIVES = ("mlm", "itm", "mvm")


class PretrainingHeads(nn.Module):
    """``mlm`` (decoder tied to the model's word embeddings), ``itm``, ``mvm`` (SOHO): each present if used.

    ``mvm_head="dictionary"`` (as released) scores MVM against the dictionary's entries and has no parameters:
    ``use_mvm`` is set and ``mvm`` stays None; ``"classifier"`` builds a learned :class:`MvmHead`."""

    def __init__(self, model: VisionLanguageModel, objectives: Iterable[str], dictionary_size: int | None = None,
                 mvm_head: str = "dictionary") -> None:
        super().__init__()
        objectives = set(objectives)
        config = model.config
        self.mlm = MlmHead(config, model.text_embeddings.word_embeddings) if "mlm" in objectives else None
        self.itm = ItmHead(config.hidden_size) if "itm" in objectives else None
        self.use_mvm = "mvm" in objectives
        self.mvm: MvmHead | None = None
        if mvm_head not in MVM_HEADS:
            raise ValueError(f"mvm_head must be one of {MVM_HEADS}, got {mvm_head!r}")
        if self.use_mvm:
            if dictionary_size is None:
                raise ValueError("MVM needs the visual dictionary's size")
            if mvm_head == "classifier":
                self.mvm = MvmHead(config, dictionary_size)

    def own_state_dict(self) -> dict:
        """The heads' tensors without the MLM decoder weight (it is the model's word embedding matrix)."""
        return {k: v for k, v in self.state_dict().items() if k != "mlm.decoder.weight"}
