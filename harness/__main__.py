"""``python -m harness`` is ``vlbench``; launchers that take a module use it: ``torchrun --nproc_per_node 2 -m harness run ...``."""

from harness.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="vlbench")
