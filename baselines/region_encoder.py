"""``--model region``: Faster R-CNN region features + box geometry as the visual tokens.

The detector is frozen (trained beforehand on the boxes, or loaded); only the projection into the transformer
(the shared ``VisualProjection``) and the geometry embedding learn with the transformer, as in UNITER / LXMERT.

Tasks hand every encoder image tensors, not ids. The encoder therefore looks each image up by a digest of its
pixels in the attached feature cache (filled before training, keyed by image id, see ``region_setup``); an
image that is not in the cache is run through the detector there and then. Both paths give the same tokens
so the cache only saves time and never changes results.

With imported features (``RegionConfig.features == "imported"``, ``run --features CACHE``) there is no
detector: every image must be in the attached cache, and one that is not is an error.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from baselines.detector import build_detector
from baselines.feature_cache import FeatureCache, pixel_digest
from baselines.regions import GEOMETRY_DIM, Regions, box_geometry, extract_regions
from harness.errors import VlbenchError
from pixelbert.config import ModelConfig
from pixelbert.visual import VisualEncoder, VisualProjection, VisualTokens


def pixels_uint8(images: Tensor) -> np.ndarray:
    """Float images in [0, 1] -> the uint8 pixels they were made from ([B, 3, H, W]); exact for x / 255."""
    return images.detach().mul(255.0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


class RegionEncoder(VisualEncoder):
    cost_name = "detector"

    def __init__(self, config: ModelConfig, hidden_size: int, dropout: float = 0.1, layer_norm_eps: float = 1e-12):
        super().__init__(hidden_size)
        region = config.region
        if region is None:
            raise VlbenchError("the region encoder needs a region config")
        self.region = region
        self.detector: nn.Module | None = None
        if region.features == "detector":
            if region.num_classes < 1:
                raise VlbenchError("the region encoder needs the detector's num_classes (set when the detector is "
                                   "trained or loaded)")
            self.detector = build_detector(config.visual, region, region.num_classes)
            self.detector.requires_grad_(False)
            self.detector.eval()
        self.feature_dim = region.representation_size
        self.projection = VisualProjection(self.feature_dim, hidden_size, dropout, layer_norm_eps)
        # UNITER's location embedding: 7-d box geometry -> Linear -> LayerNorm, added to the region feature.
        self.geometry = nn.Sequential(nn.Linear(GEOMETRY_DIM, hidden_size), nn.LayerNorm(hidden_size, eps=layer_norm_eps))
        self._cache: FeatureCache | None = None
        self._rows: dict[str, int] = {}  # pixel digest -> cache row
        self.live_images = 0  # images that missed the cache and went through the detector
        self.fallback_images = 0  # images with no box (the whole image stood in)

    def train(self, mode: bool = True) -> RegionEncoder:
        super().train(mode)
        if self.detector is not None:
            self.detector.eval()  # frozen: BatchNorm statistics and RPN/RoI sampling stay in inference mode
        return self

    def attach(self, cache: FeatureCache, rows: dict[str, int]) -> None:
        """Serve images whose pixel digest is in ``rows`` from ``cache`` (see region_setup.fill_cache)."""
        if cache.feature_dim != self.feature_dim:
            raise VlbenchError(f"{cache.path}: cached region features have dimension {cache.feature_dim}, the "
                               f"model's projection expects {self.feature_dim}")
        self._cache, self._rows = cache, dict(rows)

    def detach_cache(self) -> None:
        self._cache, self._rows = None, {}

    def regions(self, images: Tensor, image_sizes: Tensor | None = None) -> list[Regions]:
        """Per image: cached regions when its pixels are in the cache, else the detector's, computed now.
        ``image_sizes``: each image's (height, width) in a padded batch; the detector and the cache see the
        image alone, never the padding (so neither depends on the batch an image comes in)."""
        if image_sizes is not None:
            crops = [images[i:i + 1, :, :int(h), :int(w)] for i, (h, w) in enumerate(image_sizes.tolist())]
            return [r for crop in crops for r in self.regions(crop)]
        device = images.device
        out: list[Regions | None] = [None] * images.shape[0]
        missing = []
        if self._cache is not None:
            for i, pixels in enumerate(pixels_uint8(images)):
                row = self._rows.get(pixel_digest(pixels))
                if row is None:
                    missing.append(i)
                    continue
                features, boxes = self._cache.row(row)
                out[i] = Regions(boxes=torch.from_numpy(np.array(boxes, dtype=np.float32)).to(device),
                                 features=torch.from_numpy(np.array(features, dtype=np.float32)).to(device),
                                 scores=torch.ones(len(boxes), device=device))
        else:
            missing = list(range(images.shape[0]))
        if missing:
            if self.detector is None:
                raise VlbenchError(f"{len(missing)} image(s) are not in the imported region feature cache "
                                   f"({self._cache.path if self._cache is not None else 'none attached'})")
            if self.region.boxes == "gt":
                raise VlbenchError(f"{len(missing)} image(s) have no cached annotated boxes; --boxes gt needs "
                                   "every image in the boxes files (NLVR2 images have none)")
            # The detector runs in float32 under any autocast, as it does when it fills the feature cache (whose
            # stamp does not name a precision): a region's features must not depend on how it was reached.
            with torch.autocast(images.device.type, enabled=False):
                live = extract_regions(self.detector, images[missing].float(), self.region)
            self.live_images += len(missing)
            for i, regions in zip(missing, live):
                self.fallback_images += int(regions.fallback)
                out[i] = regions
        return out  # type: ignore[return-value]

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> VisualTokens:
        regions = self.regions(images, image_sizes)
        batch, count = len(regions), max(len(r.boxes) for r in regions)
        dtype = self.projection.proj.weight.dtype
        features = images.new_zeros(batch, count, self.feature_dim, dtype=dtype)
        boxes = images.new_zeros(batch, count, 4, dtype=dtype)
        mask = torch.zeros(batch, count, dtype=torch.bool, device=images.device)
        for i, r in enumerate(regions):
            k = len(r.boxes)
            features[i, :k] = r.features.to(dtype)
            boxes[i, :k] = r.boxes.to(dtype)
            mask[i, :k] = True
        hidden = self.projection(features, extra=self.geometry(box_geometry(boxes)))
        return VisualTokens(features=hidden, mask=mask, boxes=boxes)
