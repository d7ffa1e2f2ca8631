"""nox sessions: tests, lint, demo, comparison, results, ablation, benchmarks.

Sessions run in the active Python environment (``venv_backend="none"``): torch is several GB, and the
machines this project targets serve it from local disk to the system pip. Install once with
``python -m pip install -e ".[dev]"``, then ``nox -s tests`` / ``nox -s lint`` / ``nox -s demo``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The test suite, exactly as CI runs it."""
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff over the code and tests."""
    session.run("ruff", "check", "harness", "pixelbert", "baselines", "tests", "benchmarks", "noxfile.py")


@nox.session(venv_backend="none")
def demo(session: nox.Session) -> None:
    """The main job on the embedded world: Pixel-BERT and the text-only floor on NLVR2, then scored."""
    for model in ("pixelbert", "textonly"):
        session.run("vlbench", "run", "--model", model, "--task", "nlvr2", "--run-dir", f"results/demo/{model}-nlvr2")


@nox.session(venv_backend="none")
def comparison(session: nox.Session) -> None:
    """The headline comparison: every registered model on every registered task, seeds 1-3, tiny preset, plus one
    side-by-side `vlbench bench`, then `vlbench compare` into results/comparison/report. 6 models x 3 tasks x 3
    seeds = 54 runs: on a 2-core CPU several hours; on one GPU with 16 cores, run them as parallel processes (see
    docs/results/README.md). Extra arguments go to every `vlbench run`, e.g. ``-- --device cuda``."""
    from harness.models import MODELS  # every registered model and task: a new file joins the comparison
    from harness.tasks import TASKS

    root = "results/comparison"
    for task in TASKS.names():
        for model in MODELS.names():
            session.run("vlbench", "run", "--model", model, "--task", task, "--seeds", "1,2,3", "--no-progress",
                        "--run-dir", f"{root}/{model}-{task}", *session.posargs)
    session.run("vlbench", "bench", "--model", "region", "--compare", ",".join(MODELS.names()), "--task", "vqa",
                "--run-dir", f"{root}/bench", "--no-progress")
    session.run("vlbench", "compare", root, "--out", f"{root}/report")


RESULTS = "docs/results/embedded-v5"
"""The committed comparison under the current default protocol (world v5, 6-epoch world pre-training). The
previous default's runs (docs/results/embedded-v4) stay committed with the report they made, as history."""


@nox.session(venv_backend="none")
def results(session: nox.Session) -> None:
    """Regenerate the committed comparison (`vlbench compare` over the run records in docs/results/embedded-v5/runs)
    and the table that README.md and docs/results/tiny-preset.md quote from it. Add a run by copying its run.json
    and per_example_*.json into runs/MODEL-TASK/seed-N, then run this; tests/test_embedded_tables.py fails while a
    document quotes anything else."""
    session.run("vlbench", "compare", f"{RESULTS}/runs", "--out", RESULTS, "--embed", "README.md:tiny-results",
                "--embed", "docs/results/tiny-preset.md:tiny-results")


@nox.session(venv_backend="none")
def ablation(session: nox.Session) -> None:
    """The pre-training ablation (no pre-training, MLM, ITM, MLM+ITM, +pixel sampling, SOHO MLM+ITM+MVM) on
    VQA, NLVR2 and retrieval, with the tiny preset; writes results/ablation/ablation.md. Extra arguments pass
    through, e.g. ``nox -s ablation -- --limit 256 --epochs 2``."""
    session.run("vlbench", "pretrain-ablation", "--out", "results/ablation", "--no-progress", *session.posargs)


@nox.session(venv_backend="none")
def benchmarks(session: nox.Session) -> None:
    """pytest-benchmark timings of the hot paths (benchmarks/), kept out of the default test run. Compare with
    the stored baseline: ``nox -s benchmarks -- --benchmark-compare`` (or ``--benchmark-compare=0001``); store a
    new one with ``nox -s benchmarks -- --benchmark-save=cpu``."""
    session.run("python", "-m", "pytest", "benchmarks", "-q", "-o", "addopts=-ra", "--benchmark-only",
                "--benchmark-storage=file://benchmarks/baseline", "--benchmark-columns=min,median,max,rounds",
                *session.posargs)
