"""``--model textonly``: the same transformer with no visual tokens, the language-prior floor."""

from __future__ import annotations

from harness.models import MODELS, ModelRecipe
from pixelbert.config import ModelConfig
from pixelbert.visual import NoVisualEncoder


@MODELS.register("textonly")
class TextOnly(ModelRecipe):
    description = "text-only control: the shared transformer without visual tokens"

    def visual_encoder(self, config: ModelConfig) -> NoVisualEncoder:
        return NoVisualEncoder(config.transformer.hidden_size)
