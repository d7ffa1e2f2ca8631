"""Drawing a scene with PIL, and measuring what of each object stays visible (for the COCO boxes).

Objects are drawn at ``supersample`` times the final size and averaged down (anti-aliasing). A label map
drawn in the same order tells which object owns each pixel, so a box is the *visible* extent of its object.
Everything here is a pure function of the scene: same scene, same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from harness.world.scene import COLORS, Background, Scene, SceneObject

CIRCLE_POINTS = 32


@dataclass(frozen=True)
class Rendered:
    image: Image.Image  # RGB, size x size
    boxes: list[tuple[float, float, float, float] | None]  # per object [x, y, w, h] in pixels; None if hidden
    areas: list[float]  # visible area per object, in final pixels
    polygons: list[list[float]]  # per object outline [x1, y1, x2, y2, ...] in final pixels (unoccluded)


def shape_outline(obj: SceneObject, scale: float) -> list[tuple[float, float]]:
    """The object's outline as polygon vertices, in pixels of an image ``scale`` pixels wide."""
    cx, cy, r = obj.x * scale, obj.y * scale, obj.r * scale
    if obj.shape == "circle":
        return [(cx + r * math.cos(2 * math.pi * k / CIRCLE_POINTS), cy + r * math.sin(2 * math.pi * k / CIRCLE_POINTS))
                for k in range(CIRCLE_POINTS)]
    if obj.shape == "square":
        h = 0.8 * r  # corners reach 1.13 r: about the same visual weight as the circle
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if obj.shape == "diamond":
        return [(cx, cy - 1.1 * r), (cx + 0.8 * r, cy), (cx, cy + 1.1 * r), (cx - 0.8 * r, cy)]
    if obj.shape == "triangle":
        big = 1.15 * r
        top = cy - 0.75 * big  # shifted so the triangle's box, not its centroid, is centred on (cx, cy)
        base = cy + 0.75 * big
        half = big * math.sin(math.pi / 3)
        return [(cx, top), (cx + half, base), (cx - half, base)]
    if obj.shape == "cross":
        a, w = r, 0.36 * r  # arm half-length, arm half-width
        return [(cx - w, cy - a), (cx + w, cy - a), (cx + w, cy - w), (cx + a, cy - w), (cx + a, cy + w),
                (cx + w, cy + w), (cx + w, cy + a), (cx - w, cy + a), (cx - w, cy + w), (cx - a, cy + w),
                (cx - a, cy - w), (cx - w, cy - w)]
    raise ValueError(f"unknown shape {obj.shape!r}")


def render_background(bg: Background, size: int) -> np.ndarray:
    """An H x W x 3 float array: plain colour, linear gradient, or a mild blotchy noise texture."""
    base = np.asarray(bg.base, dtype=np.float32)
    if bg.pattern == "gradient":
        ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
        if bg.direction == "horizontal":
            t = np.broadcast_to(ramp[None, :], (size, size))
        elif bg.direction == "vertical":
            t = np.broadcast_to(ramp[:, None], (size, size))
        else:
            t = (ramp[None, :] + ramp[:, None]) / 2
        second = np.asarray(bg.second, dtype=np.float32)
        return base + t[..., None] * (second - base)
    pixels = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    if bg.pattern == "textured":
        rng = np.random.default_rng(bg.noise_seed)
        coarse = max(2, size // 8)  # low-frequency blotches, upsampled by repetition, plus fine grain
        blotches = rng.normal(0.0, 9.0, (coarse, coarse, 1)).astype(np.float32)
        blotches = np.repeat(np.repeat(blotches, -(-size // coarse), 0), -(-size // coarse), 1)[:size, :size]
        grain = rng.normal(0.0, 5.0, (size, size, 1)).astype(np.float32)
        pixels = pixels + blotches + grain
    return pixels


def render_scene(scene: Scene, size: int, supersample: int = 2) -> Rendered:
    """Draw ``scene`` as a ``size`` x ``size`` RGB image and measure each object's visible box and area."""
    big = size * supersample
    # The background is smooth, so it is made at the final size and upscaled by repetition (4x fewer pixels
    # to compute); averaging down later gives back exactly these pixels.
    pixels = np.clip(np.rint(render_background(scene.background, size)), 0, 255).astype(np.uint8)
    canvas = Image.fromarray(pixels, "RGB")
    if supersample > 1:
        canvas = canvas.resize((big, big), Image.Resampling.NEAREST)
    labels = Image.new("L", (big, big), 0)
    draw, draw_labels = ImageDraw.Draw(canvas), ImageDraw.Draw(labels)
    outlines = []
    for index, obj in enumerate(scene.objects, start=1):
        outline = shape_outline(obj, big)
        outlines.append(outline)
        draw.polygon(outline, fill=COLORS[obj.color])
        draw_labels.polygon(outline, fill=index)
    image = canvas.reduce(supersample) if supersample > 1 else canvas

    label_map = np.asarray(labels)
    boxes: list[tuple[float, float, float, float] | None] = []
    areas: list[float] = []
    for index in range(1, len(scene.objects) + 1):
        mask = label_map == index
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            boxes.append(None)
            areas.append(0.0)
            continue
        cols = np.flatnonzero(mask.any(axis=0))
        x0, y0 = cols[0] / supersample, rows[0] / supersample
        x1, y1 = (cols[-1] + 1) / supersample, (rows[-1] + 1) / supersample
        boxes.append((float(x0), float(y0), float(x1 - x0), float(y1 - y0)))
        areas.append(float(np.count_nonzero(mask)) / supersample**2)
    polygons = [[round(c / supersample, 2) for point in outline for c in point] for outline in outlines]
    return Rendered(image=image, boxes=boxes, areas=areas, polygons=polygons)


def save_png(image: Image.Image, path: str) -> None:
    """PNG without metadata chunks: no timestamps, so the bytes depend only on the pixels."""
    image.save(path, format="PNG", compress_level=3)  # measured: faster than the default 6, files no larger
