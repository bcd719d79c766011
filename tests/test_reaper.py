"""The reaper's process checks: a dead process that nobody has collected yet must not hold up a killed run."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from mteb_vllm import reaper


def _zombie() -> subprocess.Popen:
    """A child that has exited and that this process has not collected (waited for) yet."""
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 30
    while True:
        if psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE:
            return proc
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="zombies are read from /proc")
def test_a_zombie_is_not_alive_and_terminate_does_not_wait_for_it():
    proc = _zombie()
    try:
        assert reaper._alive(proc.pid) is False
        started = time.monotonic()
        reaper.terminate([proc.pid])
        # the old check (os.kill(pid, 0)) saw the zombie as alive: GRACE_SECONDS after SIGTERM, then again after
        # SIGKILL, which outlasted the 2 s a SIGTERM'd CLI's engine processes are given to be gone
        assert time.monotonic() - started < reaper.GRACE_SECONDS / 2
    finally:
        proc.wait()
    assert reaper._alive(proc.pid) is False  # collected: no /proc entry at all


def test_a_running_process_is_alive_until_terminated():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert reaper._alive(proc.pid) is True
        reaper.terminate([proc.pid])
        assert reaper._alive(proc.pid) is False  # a zombie of this process now, which counts as gone
    finally:
        proc.kill()
        proc.wait()
