"""Tasks: what a split looks like, the training objective, prediction files, the official metric, and what
reports need to know (metrics, their order and direction, the significance test).

One file per task, registered by name in :data:`TASKS` so ``--task vqa`` maps to one class; the registry finds
the files itself (docs/extending.md).
"""

from harness.registry import Registry

TASKS: Registry = Registry("task", "harness.tasks")


def load_all() -> None:
    """Import the task modules so that they register themselves."""
    TASKS.discover()
