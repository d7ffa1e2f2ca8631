"""Models by name: a model in vlbench is a visual encoder plus the shared text embeddings, cross-modal
transformer and heads. Each file here registers one visual-encoder recipe in :data:`MODELS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from harness.errors import VlbenchError
from harness.registry import Registry
from pixelbert.config import DictionaryConfig, ModelConfig, TransformerConfig, VisualConfig, get_preset
from pixelbert.model import VisionLanguageModel
from pixelbert.pretrained import load_bert_weights, transformer_config_from_folder
from pixelbert.visual import VisualEncoder

MODELS: Registry = Registry("model")


@dataclass
class PrepareContext:
    """What a model may need before training: the run's data (to train a detector, fill a feature cache)."""

    spec: Any  # DatasetSpec
    task: Any  # Task: its image_paths(split) names every image the run will show the model
    images: Any  # ImageTensors: the exact pixels the model will be given
    splits: list[str]
    options: dict[str, Any] = field(default_factory=dict)  # model-specific CLI options (e.g. --detector)
    progress: bool = True
    seed: int = 0


@dataclass
class Prepared:
    """``setup``: the setup to build (e.g. with the detector's class count); ``finish(model)`` runs after
    the model is built and returns what run.json records about the visual encoder."""

    setup: ModelSetup
    finish: Callable[[VisionLanguageModel], dict[str, Any]]


class ModelRecipe(ABC):
    """How one ``--model`` name builds its visual encoder; everything else is shared."""

    description: str = ""

    def configure(self, config: ModelConfig) -> ModelConfig:
        """Adjust the preset for this model (most models take it as it is)."""
        return config

    def configure_preset(self, config: ModelConfig, preset: str) -> ModelConfig:
        """Like :meth:`configure`, for models whose extra settings depend on the preset's name (SOHO)."""
        return self.configure(config)

    @abstractmethod
    def visual_encoder(self, config: ModelConfig) -> VisualEncoder: ...

    def load_cnn(self, encoder: VisualEncoder, path: Path) -> None:
        raise VlbenchError(f"this model has no CNN to initialise from {path}")

    def prepare(self, setup: ModelSetup, context: PrepareContext) -> Prepared | None:
        """Work before training (the region model trains/loads its detector and fills its cache)."""
        return None


@dataclass(frozen=True)
class ModelSetup:
    """The model's name, its shapes, and where its initial weights come from; stored in run.json."""

    name: str
    config: ModelConfig
    text_init: str | None = None
    text_init_layers: int | None = None
    cnn_init: str | None = None

    @property
    def transformer(self) -> TransformerConfig:
        return self.config.transformer

    @property
    def visual(self) -> VisualConfig:
        return self.config.visual

    @property
    def dictionary(self) -> DictionaryConfig | None:
        return self.config.dictionary

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.to_dict(), "text_init": self.text_init,
                "text_init_layers": self.text_init_layers, "cnn_init": self.cnn_init}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSetup:
        parts = {key: data[key] for key in ("transformer", "visual", "dictionary", "region") if key in data}
        config = ModelConfig.from_dict(parts)
        return cls(name=data["name"], config=config, text_init=data.get("text_init"),
                   text_init_layers=data.get("text_init_layers"), cnn_init=data.get("cnn_init"))


def load_all_models() -> None:
    """Import the model modules so that they register themselves."""
    from harness.models import grid, pixelbert, region, soho, textonly  # noqa: F401


def model_setup(name: str, preset: str, *, text_init: Path | None = None, text_init_layers: int | None = None,
                cnn_init: Path | None = None) -> ModelSetup:
    """The preset's shapes for ``name``; with ``text_init`` the transformer takes the checkpoint's shape."""
    load_all_models()
    recipe: ModelRecipe = MODELS.get(name)()
    config = recipe.configure_preset(get_preset(preset), preset)
    if text_init is not None:
        config = replace(config, transformer=transformer_config_from_folder(text_init, num_layers=text_init_layers))
    return ModelSetup(name=name, config=config, text_init=None if text_init is None else str(text_init),
                      text_init_layers=text_init_layers, cnn_init=None if cnn_init is None else str(cnn_init))


def build_model(setup: ModelSetup) -> VisionLanguageModel:
    """A randomly initialised model of the setup's shape (weights are loaded separately)."""
    load_all_models()
    recipe: ModelRecipe = MODELS.get(setup.name)()
    encoder = recipe.visual_encoder(setup.config)
    return VisionLanguageModel(encoder, setup.transformer)


def trainable_cnn(model: VisionLanguageModel) -> nn.Module | None:
    """The part the training loop gives its own learning rate / optimiser (Pixel-BERT's CNN)."""
    return model.visual_encoder.cnn


def load_pretrained_parts(model: VisionLanguageModel, setup: ModelSetup) -> None:
    """Load real weights from local files named in the setup: BERT-family text side, torchvision CNN."""
    if setup.text_init is not None:
        load_bert_weights(model, setup.text_init, num_layers=setup.text_init_layers)
    if setup.cnn_init is not None:
        MODELS.get(setup.name)().load_cnn(model.visual_encoder, Path(setup.cnn_init))
