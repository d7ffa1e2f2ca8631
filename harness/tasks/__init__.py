"""Tasks: what a split looks like, the training objective, prediction files and the official metric.

One file per task, registered by name in :data:`TASKS` so ``--task vqa`` maps to one class.
"""

from harness.registry import Registry

TASKS: Registry = Registry("task")


def load_all() -> None:
    """Import the task modules so that they register themselves."""
    from harness.tasks import nlvr2, retrieval, vqa  # noqa: F401
