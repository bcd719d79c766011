"""The collector pause around vLLM's import and start must always hand the caller's setting back."""

from __future__ import annotations

import gc

import pytest

from mteb_vllm.process_state import paused_gc


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


def test_frozen_heap_freezes_for_the_block_only():
    from mteb_vllm.process_state import caller_freeze_count, frozen_heap

    gc.unfreeze()
    with frozen_heap():
        assert gc.get_freeze_count() > 0 and caller_freeze_count() == 0
        with frozen_heap():  # nested: no-op
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_frozen_heap_leaves_a_callers_own_freeze_alone():
    from mteb_vllm.process_state import caller_freeze_count, frozen_heap

    gc.freeze()
    try:
        before = gc.get_freeze_count()
        with frozen_heap():
            assert caller_freeze_count() > 0  # the freeze in force is the caller's, and is reported as such
        # A frozen object that dies leaves the count (a full suite's threads free some meanwhile: 2 of 1.18 M
        # once), so no exact equality; had the block unfrozen the caller's objects, the count would be 0.
        assert gc.get_freeze_count() > before // 2
    finally:
        gc.unfreeze()


def _overlapping(block) -> list[tuple[bool, int]]:
    """Thread A opens ``block``, thread B opens it, A closes while B is still inside; what B sees then."""
    import threading

    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[tuple[bool, int]] = []

    def a():
        with block():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b():
        a_in.wait(10)
        with block():
            b_in.set()
            a_out.wait(10)
            seen.append((gc.isenabled(), gc.get_freeze_count()))

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(seen) == 1, "the threads did not overlap"
    return seen


def test_a_pause_in_another_thread_outlasts_the_first_to_finish():
    gc.enable()
    [(enabled, _)] = _overlapping(paused_gc)
    assert not enabled, "the first thread to finish switched the collector on under the other"
    assert gc.isenabled()


def test_a_freeze_in_another_thread_outlasts_the_first_to_finish():
    from mteb_vllm.process_state import frozen_heap

    gc.unfreeze()
    [(_, frozen)] = _overlapping(frozen_heap)
    assert frozen > 0, "the first thread to finish unfroze the heap under the other"
    assert gc.get_freeze_count() == 0
