"""The CPU share run records carry beside training seconds (harness/training/cpu_share.py)."""

from __future__ import annotations

import time

import pytest
import torch

from harness.training.cpu_share import CpuClock, cpu_share, cpu_share_note, overall_cpu_share


def test_cpu_share_is_cpu_seconds_over_wall_seconds_times_threads() -> None:
    assert cpu_share(20.0, 10.0, 2) == 1.0
    assert cpu_share(5.0, 10.0, 2) == 0.25, "a process that got a quarter of its two threads' time"
    assert cpu_share(1.0, 0.0, 2) is None and cpu_share(1.0, 1.0, 0) is None


def test_overall_share_weights_epochs_by_their_seconds() -> None:
    history = [{"cpu_share": 1.0, "seconds": 30.0}, {"cpu_share": 0.4, "seconds": 10.0},
               {"seconds": 5.0}]  # an epoch recorded before the share was measured is left out
    assert overall_cpu_share(history) == pytest.approx(0.85)
    assert overall_cpu_share([{"seconds": 3.0}]) is None and overall_cpu_share([]) is None


def test_a_waiting_process_reports_a_low_share_and_a_busy_one_a_higher() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clock = CpuClock()
        time.sleep(0.3)  # wall time passes, no CPU is used: what waiting for a busy core looks like
        waiting = clock.share()
        clock = CpuClock()
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:
            pass
        busy = clock.share()
    finally:
        torch.set_num_threads(threads)
    assert waiting is not None and waiting < 0.2
    assert busy is not None and busy > waiting


def test_the_result_line_shows_the_share_only_when_recorded() -> None:
    assert cpu_share_note({"cpu_share": 0.5}) == ", CPU share 0.50"
    assert cpu_share_note({"wall_seconds": 3.0}) == ""
