"""``vlbench check``: CI regression gate against committed baselines (``results/baselines/``)."""
