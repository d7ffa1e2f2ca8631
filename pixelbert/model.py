"""A vision-language model = a visual encoder + the shared text embeddings + the shared cross-modal transformer.

Pixel-BERT, SOHO, the frozen-grid and region baselines and the text-only control are all this class with a
different ``visual_encoder`` module; task heads sit outside it (pixelbert/heads.py) and read ``FusionOutput.pooled``.

Evaluation can encode each image once (``encode_images``) and fuse it with many texts (``fuse``), using
``VisualTokens.index`` / ``repeat_interleave`` / ``expand_to`` to line images up with captions.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from harness.errors import VlbenchError
from pixelbert.config import ModelConfig, TransformerConfig
from pixelbert.pixel_encoder import PixelEncoder
from pixelbert.text_embeddings import TextEmbeddings
from pixelbert.transformer import CrossModalTransformer
from pixelbert.visual import NoVisualEncoder, VisualEncoder, VisualTokens


@dataclass
class FusionOutput:
    sequence: Tensor
    """[B, T + N, H]: positions [0, T) are the text (padding included), [T, T + N) the visual tokens."""
    pooled: Tensor
    """[B, H]: pooled [CLS], the input of the VQA / NLVR2 / ITM heads."""
    text_length: int
    """T, so ``sequence[:, :text_length]`` is the text part (MLM) and ``sequence[:, text_length:]`` the visual."""


class VisionLanguageModel(nn.Module):
    """Args: visual_encoder: any VisualEncoder whose hidden_size equals the transformer's; config: the transformer."""

    def __init__(self, visual_encoder: VisualEncoder, config: TransformerConfig) -> None:
        super().__init__()
        if visual_encoder.hidden_size != config.hidden_size:
            raise VlbenchError(
                f"visual encoder hidden size {visual_encoder.hidden_size} != transformer hidden size "
                f"{config.hidden_size}"
            )
        self.config = config
        self.visual_encoder = visual_encoder
        self.text_embeddings = TextEmbeddings(config)
        self.transformer = CrossModalTransformer(config)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def encode_images(self, images: Tensor, image_sizes: Tensor | None = None) -> VisualTokens:
        """[B, 3, H, W] float RGB in [0, 1] -> visual tokens [B, N, H] (compute once, reuse across texts).
        ``image_sizes`` [B, 2]: each image's (height, width) in a padded batch (``ImageTensors.inputs``)."""
        return self.visual_encoder(images, image_sizes)

    def fuse(self, input_ids: Tensor, attention_mask: Tensor, visual: VisualTokens | None,
             token_type_ids: Tensor | None = None) -> FusionOutput:
        """Text ids [B, T] ([CLS] ... [SEP], padded) + mask [B, T] + visual tokens (None = text only)."""
        text = self.text_embeddings(input_ids, token_type_ids)
        if visual is not None and visual.batch_size != input_ids.shape[0]:
            raise ValueError(
                f"{visual.batch_size} images for {input_ids.shape[0]} texts; line them up with "
                "VisualTokens.index / repeat_interleave / expand_to"
            )
        out = self.transformer(
            text, attention_mask,
            visual.features if visual is not None else None,
            visual.mask if visual is not None else None,
        )
        return FusionOutput(sequence=out.sequence, pooled=out.pooled, text_length=input_ids.shape[1])

    def forward(self, input_ids: Tensor, attention_mask: Tensor, images: Tensor,
                token_type_ids: Tensor | None = None, image_sizes: Tensor | None = None) -> FusionOutput:
        return self.fuse(input_ids, attention_mask, self.encode_images(images, image_sizes), token_type_ids)


def build_pixelbert(config: ModelConfig) -> VisionLanguageModel:
    """Pixel-BERT: the pixel encoder of ``config.visual`` and a transformer of ``config.transformer``."""
    t = config.transformer
    encoder = PixelEncoder(config.visual, t.hidden_size, dropout=t.dropout, layer_norm_eps=t.layer_norm_eps)
    return VisionLanguageModel(encoder, t)


def build_text_only(config: TransformerConfig) -> VisionLanguageModel:
    """The text-only control: same text side and transformer, no visual tokens."""
    return VisionLanguageModel(NoVisualEncoder(config.hidden_size), config)
