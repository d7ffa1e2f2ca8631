"""The ``vlbench`` command line (click). One module per command group."""
