"""Models by name: a model in vlbench is a visual encoder plus the shared text embeddings, cross-modal
transformer and heads. Each file here registers one visual-encoder recipe in :data:`MODELS`; the registry finds
the files itself, so a new model is one new file (docs/extending.md).

A recipe declares what the rest of vlbench needs to know about it (:class:`Capabilities`: visual tokens or not,
random token sampling, a visual dictionary, a detector, the model options it accepts), so no other code names a
model or tests an encoder's class.
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
from pixelbert.config import (
    PIXELBERT_IMAGE_SIZE,
    PIXELBERT_MAX_SIZE,
    DictionaryConfig,
    ModelConfig,
    TransformerConfig,
    VisualConfig,
    get_preset,
)
from pixelbert.model import VisionLanguageModel
from pixelbert.pretrained import load_bert_weights, transformer_config_from_folder
from pixelbert.visual import VisualEncoder

MODELS: Registry = Registry("model", "harness.models")


@dataclass(frozen=True)
class Capabilities:
    """What a model is and accepts, read by the commands instead of its name or its encoder's class."""

    visual_tokens: bool = True
    """False for the text-only control: no image-text matching to pre-train, no visual pipeline to time."""
    token_sampling: bool = False
    """Pre-training may feed a random subset of the visual tokens (Pixel-BERT's pixels, ViLT's patches); the
    encoder then has ``pixel_sample`` (tokens kept in training mode, None = all) and ``sample_generator``."""
    visual_dictionary: bool = False
    """SOHO's visual dictionary: masked visual modelling (``--objectives mvm``) applies; the encoder has
    ``dictionary`` (with a ``generator``), ``mvm_probability`` and ``mvm_generator``."""
    trainable_cnn: bool = False
    """A CNN trained with the model (Pixel-BERT, SOHO): ``--freeze-cnn`` can fix it at fine-tuning."""
    options: dict[str, str] = field(default_factory=dict)
    """Model options this model accepts (``boxes``, ``detector``, ...) -> what they act on, for the error a model
    without it gives (``--boxes applies only to --model region: 'pixelbert' has no detector boxes``)."""


@dataclass
class PrepareContext:
    """What a model may need before training: the run's data (to train a detector, fill a feature cache)."""

    spec: Any  # DatasetSpec
    task: Any  # Task: its image_paths(split) names every image the run will show the model
    images: Any  # ImageTensors: the exact pixels the model will be given
    splits: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    """The model options given (names from :attr:`Capabilities.options`; unset ones are absent)."""
    progress: bool = True
    seed: int = 0
    detector_boxes: Path | None = None
    """A spec whose train split has COCO boxes, for a detector when ``spec`` has none (the caller decides: on the
    embedded world, its scenes; the NLVR2 pair images carry no boxes)."""
    feature_cache: bool = True
    """False for ``bench``: no precomputed features, so every timed forward runs the whole visual pipeline."""
    cache_root: Path | None = None
    """Where shared caches (detectors, region features) live; None = ``$VLBENCH_CACHE``."""


@dataclass
class Prepared:
    """``setup``: the setup to build (e.g. with the detector's class count); ``finish(model)`` runs after
    the model is built and returns what run.json records about the visual encoder."""

    setup: ModelSetup
    finish: Callable[[VisionLanguageModel], dict[str, Any]]


class ModelRecipe(ABC):
    """How one ``--model`` name builds its visual encoder; everything else is shared."""

    description: str = ""
    capabilities: Capabilities = Capabilities()
    report_order: int = 50
    """Where the model's row goes in comparison tables (pixel models first, the text floor last)."""
    colour: str | None = None
    """Its colour in plots (None: one from the palette)."""

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

    def apply_options(self, setup: ModelSetup, options: dict[str, Any]) -> ModelSetup:
        """Fold the model options that change its shape or features into the setup (region: ``boxes``)."""
        return setup

    def prepare(self, setup: ModelSetup, context: PrepareContext) -> Prepared | None:
        """Work before training (the region model trains/loads its detector and fills its cache)."""
        return None

    def attach_inputs(self, setup: ModelSetup, model: VisionLanguageModel,
                      context: PrepareContext) -> dict[str, Any] | None:
        """``eval``'s counterpart of :meth:`prepare`: every weight comes from the checkpoint, but inputs that live
        outside it (the region model's imported features) are attached here. Returns the visual encoder's
        run.json record, or None."""
        if context.options.get("features") is not None:
            raise VlbenchError("--features is for the region model")
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
    MODELS.discover()


def recipe(name: str) -> ModelRecipe:
    """The registered recipe of ``--model name`` (a one-line error listing the known ones otherwise)."""
    return MODELS.get(name)()


def models_with(predicate: Callable[[ModelRecipe], bool]) -> list[str]:
    """Names of the registered models whose recipe satisfies ``predicate`` (for error messages)."""
    return [name for name, cls in MODELS.items() if predicate(cls())]


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse a model option that ``name`` does not accept, naming the models that do."""
    accepted = recipe(name).capabilities.options
    for option in options:
        if option not in accepted:
            takers = models_with(lambda r, o=option: o in r.capabilities.options)
            what = next((MODELS.get(t)().capabilities.options[option] for t in takers), option)
            flag = "--" + option.replace("_", "-")
            raise VlbenchError(f"{flag} applies only to --model {' or '.join(takers) or '(none)'}: {name!r} has no "
                               f"{what}")


def model_setup(name: str, preset: str, *, text_init: Path | None = None, text_init_layers: int | None = None,
                cnn_init: Path | None = None, image_size: int | None = None, max_size: int | None = None) -> ModelSetup:
    """The preset's shapes for ``name``; with ``text_init`` the transformer takes the checkpoint's shape;
    ``image_size`` / ``max_size`` replace the preset's image geometry (``VisualConfig``)."""
    config = recipe(name).configure_preset(get_preset(preset), preset)
    config = with_geometry(config, image_size, max_size)
    if text_init is not None:
        config = replace(config, transformer=transformer_config_from_folder(text_init, num_layers=text_init_layers))
    return ModelSetup(name=name, config=config, text_init=None if text_init is None else str(text_init),
                      text_init_layers=text_init_layers, cnn_init=None if cnn_init is None else str(cnn_init))


def with_geometry(config: ModelConfig, image_size: int | None, max_size: int | None) -> ModelConfig:
    """``config`` with the image geometry given (None keeps its own); a one-line error when it is not valid.

    ``image_size`` alone keeps the aspect ratio (DESIGN.md section 4: it sets the short side): the long side is
    capped by the config's ``max_size``, or on a square preset at Pixel-BERT's 1333 / 800 of the short side.
    ``max_size`` 0 asks for squares."""
    if image_size is not None and max_size is None:
        max_size = config.visual.max_size or round(image_size * PIXELBERT_MAX_SIZE / PIXELBERT_IMAGE_SIZE)
    geometry = {k: v for k, v in (("image_size", image_size), ("max_size", max_size)) if v is not None}
    return replace(config, visual=replace(config.visual, **geometry)) if geometry else config


def build_model(setup: ModelSetup) -> VisionLanguageModel:
    """A randomly initialised model of the setup's shape (weights are loaded separately)."""
    encoder = recipe(setup.name).visual_encoder(setup.config)
    return VisionLanguageModel(encoder, setup.transformer)


def trainable_cnn(model: VisionLanguageModel) -> nn.Module | None:
    """The part the training loop gives its own learning rate / optimiser (Pixel-BERT's CNN)."""
    return model.visual_encoder.cnn


def load_pretrained_parts(model: VisionLanguageModel, setup: ModelSetup) -> None:
    """Load real weights from local files named in the setup: BERT-family text side, torchvision CNN."""
    if setup.text_init is not None:
        load_bert_weights(model, setup.text_init, num_layers=setup.text_init_layers)
    if setup.cnn_init is not None:
        recipe(setup.name).load_cnn(model.visual_encoder, Path(setup.cnn_init))
