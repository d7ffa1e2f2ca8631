"""The pre-training heads of one run, built for the objectives it uses."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from pixelbert.heads import ItmHead, MlmHead
from pixelbert.model import VisionLanguageModel
from pixelbert.soho.mvm import MvmHead

OBJECTIVES = ("mlm", "itm", "mvm")


class PretrainingHeads(nn.Module):
    """``mlm`` (decoder tied to the model's word embeddings), ``itm``, ``mvm`` (SOHO): each present if used."""

    def __init__(self, model: VisionLanguageModel, objectives: Iterable[str], dictionary_size: int | None = None) -> None:
        super().__init__()
        objectives = set(objectives)
        config = model.config
        self.mlm = MlmHead(config, model.text_embeddings.word_embeddings) if "mlm" in objectives else None
        self.itm = ItmHead(config.hidden_size) if "itm" in objectives else None
        if "mvm" in objectives:
            if dictionary_size is None:
                raise ValueError("the MVM head needs the visual dictionary's size")
            self.mvm = MvmHead(config, dictionary_size)
        else:
            self.mvm = None

    def own_state_dict(self) -> dict:
        """The heads' tensors without the MLM decoder weight (it is the model's word embedding matrix)."""
        return {k: v for k, v in self.state_dict().items() if k != "mlm.decoder.weight"}
