"""``--model textonly``: the same transformer with no visual tokens, the language-prior floor."""

from __future__ import annotations

from harness.models import MODELS, Capabilities, ModelRecipe
from pixelbert.config import ModelConfig
from pixelbert.visual import NoVisualEncoder


@MODELS.register("textonly")
class TextOnly(ModelRecipe):
    description = "text-only control: the shared transformer without visual tokens"
    capabilities = Capabilities(visual_tokens=False)
    report_order = 90
    colour = "#7f7f7f"

    def visual_encoder(self, config: ModelConfig) -> NoVisualEncoder:
        return NoVisualEncoder(config.transformer.hidden_size)
