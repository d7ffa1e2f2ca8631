"""The embedded world: procedurally rendered scenes written as VQA v2, NLVR2, Karpathy captions and COCO boxes.

``vlbench data synth`` (``synth_world``) writes a world to a folder; ``default_world`` returns the cached one
that commands use when no ``--data`` is given. Module map, one concept each:

- ``sizes``: how big each world is (``TINY``, ``SMALL``) and ``GENERATOR_VERSION``
- ``scene``: vocabulary, scene dataclasses, the random scene sampler
- ``render``: PIL drawing and visible boxes
- ``vqa_questions``, ``nlvr2_statements``, ``captions``, ``coco_boxes``: one task's annotations each
- ``synth``: orchestration, spec YAMLs, WORLD.json, safe installation
- ``cache``: the cached default world
"""

from __future__ import annotations

from harness.world.cache import default_world, world_path
from harness.world.sizes import GENERATOR_VERSION, SIZES, SMALL, TINY, WorldSize
from harness.world.synth import WorldResult, generate_world, read_world_info, summary_line, synth_world

__all__ = [
    "GENERATOR_VERSION",
    "SIZES",
    "SMALL",
    "TINY",
    "WorldResult",
    "WorldSize",
    "default_world",
    "generate_world",
    "read_world_info",
    "summary_line",
    "synth_world",
    "world_path",
]
