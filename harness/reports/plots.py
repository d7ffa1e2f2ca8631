"""Comparison figures (matplotlib, Agg backend: no display needed), each written as PNG and PDF.

Every configuration keeps one colour in every figure (fixed per model, shades for variants of one model),
axes say their units, and sizes suit a paper column.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from harness.fileio import write_bytes  # noqa: E402
from harness.reports.aggregate import Aggregate, task_class, task_order  # noqa: E402
from harness.reports.tables import Speed  # noqa: E402


def _throughput_label(value: float, _position: int) -> str:
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


_OTHER = ["#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def _model_colour(model: str) -> str | None:
    """The model's own colour (its recipe's ``colour``), None for a model without one."""
    from harness.models import MODELS

    return MODELS.get(model).colour if model in MODELS else None


def _primary(task: str) -> str:
    return task_class(task).primary().name


def _axis(task: str) -> str:
    cls = task_class(task)
    return cls.primary().axis or f"{cls.title} {cls.primary().title} (%)"


def colours(labels: list[str], models: dict[str, str]) -> dict[str, tuple]:
    """One colour per row label: the model's colour; variants of one model get lighter/darker shades."""
    out: dict[str, tuple] = {}
    spare = iter(_OTHER * 10)
    by_model: dict[str, list[str]] = {}
    for label in labels:
        by_model.setdefault(models[label], []).append(label)
    for model, group in by_model.items():
        base = np.array(matplotlib.colors.to_rgb(_model_colour(model) or next(spare)))
        for i, label in enumerate(group):
            shade = 0.0 if len(group) == 1 else (i / (len(group) - 1) - 0.5) * 0.6  # -0.3 .. +0.3
            rgb = base + (1 - base) * shade if shade > 0 else base * (1 + shade)
            out[label] = tuple(np.clip(rgb, 0, 1))
    return out


def _save(fig: plt.Figure, out: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=200 if ext == "png" else None, bbox_inches="tight")
        write_bytes(out / f"{name}.{ext}", buffer.getvalue())
        paths.append(out / f"{name}.{ext}")
    plt.close(fig)
    return paths


_REFERENCE_STYLE = {"chance": ("dimgray", "--"), "prior": ("firebrick", ":")}


def task_bars(agg: Aggregate, long: pd.DataFrame, labels: list[str], colour: dict, out: Path,
              references: dict[tuple[str, str], dict[str, float]] | None = None) -> list[Path]:
    """Main metric per task: bar = mean over seeds, error bar = sample std, dots = individual seeds; horizontal
    lines at the split's reference points (chance, the train-answer prior), so chance-level bars read as such."""
    tasks = task_order(agg.frame.task)
    if not tasks:
        return []
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.3 * len(tasks), 3.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric = _primary(task)
        shown = [label for label in labels if agg.cell(label, task, metric) is not None]
        for x, label in enumerate(shown):
            cell = agg.cell(label, task, metric)
            std = 0.0 if pd.isna(cell["std"]) else cell["std"]
            ax.bar(x, cell["mean"], yerr=std, color=colour[label], capsize=3)
            values = long[(long.label == label) & (long.task == task) & (long.metric == metric)].value
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(len(values))
            ax.scatter(x + jitter, values, s=10, color="black", zorder=3, label="seeds" if x == 0 else None)
        for name, value in (references or {}).get((task, metric), {}).items():
            line_colour, style = _REFERENCE_STYLE.get(name, ("black", "-."))
            ax.axhline(value, color=line_colour, linestyle=style, linewidth=1.2, label=f"{name} {value:.2f}",
                       zorder=4)
        if (references or {}).get((task, metric)):
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(range(len(shown)), shown, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(_axis(task))
        ax.set_title(task_class(task).title)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, "task_bars")


def answer_type_bars(agg: Aggregate, labels: list[str], colour: dict, out: Path) -> list[Path]:
    vqa = agg.frame[agg.frame.task == "vqa"]
    declared = [m.name for m in task_class("vqa").metrics if m.name != "overall"]
    types = [t for t in declared if (vqa.metric == t).any()]
    types += sorted(set(vqa.metric) - set(types) - {"overall"})
    shown = [label for label in labels if (vqa.label == label).any()]
    if not types or not shown:
        return []
    fig, ax = plt.subplots(figsize=(4.5, 3.0))
    width = 0.8 / len(shown)
    for i, label in enumerate(shown):
        means, stds = [], []
        for answer_type in types:
            cell = agg.cell(label, "vqa", answer_type)
            means.append(np.nan if cell is None else cell["mean"])
            stds.append(0.0 if cell is None or pd.isna(cell["std"]) else cell["std"])
        ax.bar(np.arange(len(types)) + (i - (len(shown) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
               color=colour[label], label=label)
    ax.set_xticks(range(len(types)), types)
    ax.set_xlabel("VQA answer type")
    ax.set_ylabel("VQA accuracy (%)")
    ax.legend(fontsize=7, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, "vqa_answer_types")


def recall_curves(agg: Aggregate, labels: list[str], colour: dict, out: Path) -> list[Path]:
    ret = agg.frame[agg.frame.task == "retrieval"]
    shown = [label for label in labels if (ret.label == label).any()]
    if not shown:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(6.5, 2.8), sharey=True)
    for ax, side, title in zip(axes, ("tr", "ir"), ("image → text (TR)", "text → image (IR)")):
        for label in shown:
            ks, means, stds = [], [], []
            for k in (1, 5, 10):
                cell = agg.cell(label, "retrieval", f"{side}_r{k}")
                if cell is not None:
                    ks.append(k)
                    means.append(cell["mean"])
                    stds.append(0.0 if pd.isna(cell["std"]) else cell["std"])
            ax.errorbar(ks, means, yerr=stds, marker="o", capsize=2, color=colour[label], label=label)
        ax.set_xticks([1, 5, 10])
        ax.set_xlabel("K (top-K retrieved)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("recall@K (%)")
    axes[1].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _save(fig, out, "recall_at_k")


def pareto(agg: Aggregate, labels: list[str], speed: dict[str, Speed], colour: dict, out: Path) -> list[Path]:
    """Accuracy vs images/s per task, the Pareto front (faster and better) drawn; needs bench.json speeds."""
    tasks = task_order(agg.frame.task)
    panels = []
    for task in tasks:
        points = [(label, speed[label].images_per_second, agg.cell(label, task, _primary(task)))
                  for label in labels if label in speed and speed[label].images_per_second]
        points = [(label, x, cell) for label, x, cell in points if cell is not None]
        if points:
            panels.append((task, points))
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    for ax, (task, points) in zip(axes[0], panels):
        for label, x, cell in points:
            std = 0.0 if pd.isna(cell["std"]) else cell["std"]
            ax.errorbar(x, cell["mean"], yerr=std, marker="o", capsize=2, color=colour[label], label=label)
            ax.annotate(label, (x, cell["mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = []
        for _label, x, cell in sorted(points, key=lambda p: -p[1]):  # fastest first
            if not front or cell["mean"] > front[-1][1]:
                front.append((x, cell["mean"]))
        if len(front) > 1:
            ax.plot(*zip(*front), linestyle="--", color="black", linewidth=0.8, label="Pareto front")
        ax.set_xscale("log")
        # Labelled ticks at 1-2-5 steps as plain numbers ("500", "2k"); matplotlib's default minor labels
        # ("2x10^3 3x10^3 ...") run into each other at paper size.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(_throughput_label))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("inference throughput (images/s, log scale)")
        ax.set_ylabel(_axis(task))
        ax.set_title(task_class(task).title)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _save(fig, out, "accuracy_vs_speed")


def all_plots(agg: Aggregate, long: pd.DataFrame, labels: list[str], models: dict[str, str],
              speed: dict[str, Speed], out: Path,
              references: dict[tuple[str, str], dict[str, float]] | None = None) -> tuple[list[Path], list[str]]:
    colour = colours(labels, models)
    notes = []
    paths = task_bars(agg, long, labels, colour, out, references)
    paths += answer_type_bars(agg, labels, colour, out)
    paths += recall_curves(agg, labels, colour, out)
    fast = pareto(agg, labels, speed, colour, out)
    if not fast:
        notes.append("accuracy vs speed plot skipped: no bench.json with a throughput among the runs "
                     "(run `vlbench bench` in the run directories)")
    paths += fast
    return paths, notes

