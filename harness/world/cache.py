"""The cached default world: what ``vlbench run`` uses when no ``--data`` is given.

Generated once per (size, seed, generator version) into ``$VLBENCH_CACHE`` (default ``~/.cache/vlbench``).
Two processes may race to create it: each generates into its own temporary folder and renames it into place;
the loser sees the winner's complete world, uses it and deletes its own copy.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from harness.errors import VlbenchError
from harness.fileio import cache_root
from harness.world.sizes import GENERATOR_VERSION, get_size
from harness.world.synth import check_seed, generate_to_temp, read_world_info, same_world


def world_path(size: str = "tiny", seed: int = 0) -> Path:
    """Where the cached world of ``size``/``seed`` lives (whether or not it exists yet)."""
    return cache_root() / f"world-{size}-seed{seed}-{GENERATOR_VERSION}"


def default_world(size: str = "tiny", seed: int = 0, *, progress: bool = True) -> Path:
    """The folder of the cached world of ``size``/``seed``, generating it first if needed."""
    get_size(size)
    check_seed(seed)
    final = world_path(size, seed)
    if same_world(read_world_info(final), seed, size):
        return final
    if final.exists() and not (final.is_dir() and not any(final.iterdir())):
        raise VlbenchError(f"{final}: exists but is not a complete world of size {size} seed {seed}; "
                           "delete it and run again")
    if progress:
        print(f"generating the embedded world ({size}, seed {seed}) into {final} (once)", file=sys.stderr)
    temp, _ = generate_to_temp(final.parent, final.name, seed=seed, size=size, progress=progress)
    try:
        os.rename(temp, final)  # atomic; fails if another process has put a (non-empty) world there first
    except OSError:
        shutil.rmtree(temp, ignore_errors=True)
        if not same_world(read_world_info(final), seed, size):
            raise VlbenchError(f"{final}: could not install the generated world (another process left "
                               "something else there); delete it and run again") from None
    return final
