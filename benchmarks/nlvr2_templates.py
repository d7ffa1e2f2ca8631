"""Which NLVR2 statements did a run get right? Test accuracy per statement template of the embedded world.

    python benchmarks/nlvr2_templates.py RUN_DIR [RUN_DIR ...]            # runs on the default world
    python benchmarks/nlvr2_templates.py --world DIR RUN_DIR [RUN_DIR ...]

Every RUN_DIR is a `vlbench run --task nlvr2` directory (its ``per_example_test.json``); a folder of seeds
(``seed-1``, ``seed-2``, ...) counts as one row per seed. The world writes each statement's template as the first
word of the NLVR2 ``query`` field (real NLVR2 keeps its image-search query there, so this is an analysis of the
embedded world only, not a metric of the task). Every template is a balanced true/false, so 50 is chance for each;
one standard error is printed under the table (about 3 points on the world's 284-288 test pairs per template).
Results and what they mean: docs/results/discriminate.md.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path


def templates_of(world: Path, split: str = "test") -> dict[str, str]:
    """identifier -> template, from the world's NLVR2 file (the first word of ``query``)."""
    out: dict[str, str] = {}
    for line in (world / "nlvr2" / f"{split}.json").read_text().splitlines():
        if line.strip():
            example = json.loads(line)
            out[example["identifier"]] = str(example["query"]).split()[0]
    return out


def run_dirs(paths: list[Path]) -> list[Path]:
    """Each path itself when it holds a run, else its ``seed-*`` folders that do."""
    found: list[Path] = []
    for path in paths:
        if (path / "per_example_test.json").is_file():
            found.append(path)
            continue
        seeds = sorted(p for p in path.glob("seed-*") if (p / "per_example_test.json").is_file())
        if not seeds:
            raise SystemExit(f"error: {path} has no per_example_test.json (nor seed-* folders with one)")
        found += seeds
    return found


def accuracy_by_template(run: Path, templates: dict[str, str]) -> dict[str, float]:
    record = json.loads((run / "per_example_test.json").read_text())
    if record.get("kind") != "correct":
        raise SystemExit(f"error: {run}/per_example_test.json is not an NLVR2 run's per-example record")
    right: dict[str, list[bool]] = defaultdict(list)
    for identifier, correct in zip(record["ids"], record["values"], strict=True):
        if identifier not in templates:
            raise SystemExit(f"error: {run} was scored on another world ({identifier} is not in its test split)")
        right[templates[identifier]].append(bool(correct))
    return {t: 100.0 * sum(v) / len(v) for t, v in sorted(right.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--world", type=Path, help="the world directory (default: the cached default world)")
    args = parser.parse_args()
    if args.world is None:
        from harness.world.cache import default_world
        args.world = default_world(progress=False)
    templates = templates_of(args.world)
    counts: dict[str, int] = defaultdict(int)
    for template in templates.values():
        counts[template] += 1
    names = sorted(counts)
    print("| run | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for run in run_dirs(args.runs):
        accuracy = accuracy_by_template(run, templates)
        print(f"| {run} | " + " | ".join(f"{accuracy.get(t, float('nan')):.1f}" for t in names) + " |")
    low = min(counts.values())
    print(f"\ntest pairs per template: {min(counts.values())}-{max(counts.values())}; one standard error at 50%: "
          f"{100 * math.sqrt(0.25 / low):.1f} points")


if __name__ == "__main__":
    main()
