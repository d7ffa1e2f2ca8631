"""Shared fixtures: one embedded world per test session, generated through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

# Real NLVR2 dev lines (see tests/fixtures/README.md).
NLVR2_DEV_SAMPLE = Path(__file__).resolve().parent / "fixtures" / "nlvr2_dev_sample.jsonl"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep tests from writing the user's ~/.cache/vlbench (the default world cache)."""
    import os

    os.environ["VLBENCH_CACHE"] = str(tmp_path_factory.mktemp("vlbench-cache"))
    # The default thread count shares the CPUs among the vlbench processes running now: count only this session's
    # (the test process and what it starts), so a run elsewhere on the machine cannot change a test's numbers.
    os.environ["VLBENCH_SLOTS"] = str(tmp_path_factory.mktemp("vlbench-slots"))
    # And a fixed thread count for every command a test runs (torch's default, as before the share existed): the
    # share follows the machine's CPU use, and two runs a test compares must not get different counts (CPU float
    # sums depend on it). tests/test_workers_and_threads.py checks the share itself.
    # VLBENCH_THREADS, not OMP_NUM_THREADS: torchrun's ranks started by a test keep the 1 thread torchrun gives them.
    # Under pytest-xdist (addopts' -n) the CPUs are split among the workers instead: 2 workers on 2 cores with 2
    # threads each would keep 4 threads busy-waiting for 2 cores. Set in each worker, before any test runs.
    if not os.environ.get("VLBENCH_THREADS"):
        import torch

        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
        if workers > 1:
            from harness.threads import usable_cpus

            os.environ["VLBENCH_THREADS"] = str(max(1, usable_cpus() // workers))
            torch.set_num_threads(int(os.environ["VLBENCH_THREADS"]))  # also the tests that call torch directly
        else:
            os.environ["VLBENCH_THREADS"] = str(torch.get_num_threads())


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny embedded world (seed 0), as `vlbench data synth` writes it."""
    from harness.cli.main import cli

    out = tmp_path_factory.mktemp("world") / "tiny"
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(out), "--seed", "0", "--size", "tiny",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def detector_file(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A region detector (with its attribute head) trained for 2 epochs on 48 world scenes (seconds), saved as
    `vlbench detector train` does."""
    from dataclasses import replace

    import torch

    from baselines.coco_boxes import load_coco_boxes
    from baselines.detector import build_detector, save_detector, train_detector
    from harness.data.spec import load_spec
    from pixelbert.config import RegionConfig, get_preset

    tiny = get_preset("tiny")
    region = RegionConfig(detector_epochs=2, detector_batch_size=8)
    data = load_coco_boxes(load_spec(world / "vqa.yaml"), "train")
    data = replace(data, images=data.images[:48])
    torch.manual_seed(0)
    # With bottom-up attention's attribute head, as the default detector trains on the world's colours.
    detector = build_detector(tiny.visual, region, len(data.categories), len(data.attributes or ()))
    training = train_detector(detector, data, region, progress=False)
    path = tmp_path_factory.mktemp("detector") / "detector.safetensors"
    save_detector(path, detector, {"visual": tiny.visual.to_dict(), "region": region.to_dict(), "training": training})
    return path, training


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` (addopts) with the tests of one file: no workers, they run in this process with all its threads
    (a file goes to a single worker anyway, which would only add its start-up and get a share of the CPUs)."""
    import os

    files = {str(arg).split("::")[0] for arg in config.args}
    if len(files) == 1 and files.pop().endswith(".py") and not os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return 0
    return None  # pytest-xdist's own count


# The slowest files, longest first (measured with 2 workers: the first two train for several minutes, the next
# ten took a fifth to a half of that each). pytest-xdist hands out whole files in collection order (addopts:
# --dist loadfile --no-loadscope-reorder), so the two long ones start at once on different workers, and what is
# left for the end are short files instead of one that keeps a worker busy while the others are idle. The rest
# keep their order.
LONGEST_FIRST = ("test_ci_regression.py", "test_ci_regression_blind.py", "test_registry.py", "test_resume.py",
                 "test_distributed.py", "test_run.py", "test_workers_and_threads.py", "test_pretrain_run.py",
                 "test_region_run.py", "test_world_pretraining.py", "test_world.py", "test_embedded_tables.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests stay together
