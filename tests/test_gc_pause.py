"""The collector pause around vLLM's import and start must always hand the caller's setting back."""

from __future__ import annotations

import gc

import pytest

from mteb_vllm.gc_pause import paused_gc


@pytest.fixture(autouse=True)
def _restore_gc():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_paused_inside_and_restored_after():
    gc.enable()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled(), "an inner block must not switch the collector back on"
    assert gc.isenabled()


def test_restored_after_an_error():
    gc.enable()
    with pytest.raises(RuntimeError), paused_gc():
        raise RuntimeError("engine failed to start")
    assert gc.isenabled()


def test_a_collector_the_caller_switched_off_stays_off():
    gc.disable()
    with paused_gc():
        pass
    assert not gc.isenabled()
