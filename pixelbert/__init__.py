"""The pixel side of vlbench, and the parts every model shares.

A model is a visual encoder (``PixelEncoder``, ``NoVisualEncoder``, or the baselines' grid/region encoders)
plus the shared ``TextEmbeddings`` and ``CrossModalTransformer`` (together: ``VisionLanguageModel``), with task
heads on top. Quick start::

    from pixelbert import PRESETS, build_pixelbert, load_tokenizer, VqaHead
    model = build_pixelbert(PRESETS["tiny"])
    tok = load_tokenizer()
    batch = tok(["how many red circles are there?"], padding=True, return_tensors="pt")
    out = model(batch["input_ids"], batch["attention_mask"], images)   # images: [B, 3, 64, 64] in [0, 1]
    logits = VqaHead(model.hidden_size, num_answers)(out.pooled)
"""

from pixelbert.backbones import ResNetTrunk, TinyCNN, build_backbone, load_backbone_state_dict
from pixelbert.config import PRESETS, ModelConfig, TransformerConfig, VisualConfig, get_preset
from pixelbert.heads import ItmHead, MlmHead, Nlvr2Head, VqaHead
from pixelbert.model import FusionOutput, VisionLanguageModel, build_pixelbert, build_text_only
from pixelbert.pixel_encoder import PixelEncoder, sample_pixels
from pixelbert.pretrained import load_bert_weights, transformer_config_from_folder
from pixelbert.text_embeddings import TextEmbeddings
from pixelbert.tokenizer import default_vocab_folder, load_tokenizer
from pixelbert.transformer import CrossModalTransformer, TransformerOutput
from pixelbert.visual import NoVisualEncoder, VisualEncoder, VisualProjection, VisualTokens

__all__ = [
    "PRESETS", "ModelConfig", "TransformerConfig", "VisualConfig", "get_preset",
    "TinyCNN", "ResNetTrunk", "build_backbone", "load_backbone_state_dict",
    "VisualTokens", "VisualEncoder", "VisualProjection", "NoVisualEncoder", "PixelEncoder", "sample_pixels",
    "TextEmbeddings", "CrossModalTransformer", "TransformerOutput",
    "VisionLanguageModel", "FusionOutput", "build_pixelbert", "build_text_only",
    "VqaHead", "Nlvr2Head", "ItmHead", "MlmHead",
    "load_bert_weights", "transformer_config_from_folder", "load_tokenizer", "default_vocab_folder",
]
