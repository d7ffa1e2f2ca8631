"""vlbench harness: CLI, datasets, the embedded world, metrics, training loop, records and reports."""

__version__ = "0.1.0"
