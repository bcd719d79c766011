"""Starting and closing a real in-process engine leaves the caller's process as it was: environment, random
number generators, torch's thread setting, and the garbage collector's frozen objects (issue 9)."""

from __future__ import annotations

import gc
import os
import random
import threading

import numpy as np
import pytest
import torch

from mteb_vllm import VllmEncoderWrapper
from mteb_vllm.errors import EngineStartError
from mteb_vllm.backends import BACKENDS, register_backend
from mteb_vllm.process_state import EnvironGuard, StartGuard
from mteb_vllm.testing import FakeBackend

def _rng_draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def _seed() -> None:
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)


@pytest.mark.engine
def test_engine_start_and_encode_leave_env_rng_threads_and_gc_as_found(minilm_path):
    """The engine starts inside the first encode call (lazily, as the CLI starts it; that call also freezes the
    heap for itself). After that call, and after close, the caller's state is as found."""
    gc.unfreeze()
    _seed()
    expected = _rng_draws()
    _seed()
    environ, threads, setter = dict(os.environ), torch.get_num_threads(), torch.set_num_threads
    with VllmEncoderWrapper(minilm_path, dtype="float32", lazy_start=True) as encoder:
        assert not encoder.backend.started
        encoder.embed_texts(["the engine starts here, and a first forward pass sets variables in vLLM"])
        # in-process: a test that loads bm25s (which forces worker processes) runs after this one (conftest)
        assert encoder.engine.started and encoder.engine.in_process, encoder.engine.mode_reason
        assert _rng_draws() == expected, "the engine start reseeded the caller's generators"
        assert dict(os.environ) == environ
        assert torch.set_num_threads is setter and torch.get_num_threads() == threads
        assert gc.get_freeze_count() == 0 and gc.isenabled()
    assert gc.get_freeze_count() == 0 and dict(os.environ) == environ


@pytest.mark.engine
def test_a_failed_start_restores_everything(minilm_path):
    gc.unfreeze()
    _seed()
    expected = _rng_draws()
    _seed()
    environ, setter = dict(os.environ), torch.set_num_threads
    with pytest.raises(EngineStartError, match="vLLM failed to start"):
        # a hidden size the weights do not have: vLLM fails while building the model, well into its start
        VllmEncoderWrapper(minilm_path, dtype="float32", hf_overrides={"hidden_size": 7})
    assert _rng_draws() == expected
    assert dict(os.environ) == environ and torch.set_num_threads is setter
    assert gc.get_freeze_count() == 0 and gc.isenabled()


@pytest.mark.engine
def test_objects_the_caller_froze_stay_frozen(minilm_path):
    gc.unfreeze()
    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        with VllmEncoderWrapper(minilm_path, dtype="float32") as encoder:
            # not exact: a few of the caller's frozen objects may become garbage meanwhile (freed, not unfrozen)
            assert gc.get_freeze_count() >= 0.99 * frozen, "the engine start unfroze what the caller had frozen"
            encoder.embed_texts(["x"])
        # vLLM's shutdown unfreezes everything and collects; the caller's objects still alive are frozen again
        # (the few of them that were garbage are gone, hence not an exact count)
        assert gc.get_freeze_count() >= 0.99 * frozen, "closing the engine unfroze what the caller had frozen"
    finally:
        gc.unfreeze()


def test_start_guard_restores_on_its_own():
    """The guard itself, without an engine: every piece it snapshots comes back."""
    os.environ["MTEB_VLLM_TEST_KEEP"] = "1"
    guard = StartGuard()
    os.environ["MTEB_VLLM_TEST_ADDED"] = "x"
    os.environ["MTEB_VLLM_TEST_KEEP"] = "changed"
    random.seed(99)
    torch.set_num_threads = lambda n: None  # what vLLM's CPU worker does
    guard.restore()
    assert "MTEB_VLLM_TEST_ADDED" not in os.environ and os.environ["MTEB_VLLM_TEST_KEEP"] == "1"
    assert torch.set_num_threads is guard.torch_threads[0]
    del os.environ["MTEB_VLLM_TEST_KEEP"]


def test_environ_guard_puts_back_what_this_thread_set_and_nothing_else():
    os.environ["MTEB_VLLM_T_CHANGED"] = "caller"
    os.environ["MTEB_VLLM_T_REMOVED"] = "caller"
    os.environ["MTEB_VLLM_T_THEIRS_LATER"] = "caller"
    try:
        with EnvironGuard():
            os.environ["MTEB_VLLM_T_ADDED"] = "ours"
            os.environ["MTEB_VLLM_T_CHANGED"] = "ours"
            del os.environ["MTEB_VLLM_T_REMOVED"]
            os.environ.setdefault("MTEB_VLLM_T_THEIRS_LATER", "not set: it exists")
            os.environ["MTEB_VLLM_T_THEIRS_LATER"] = "ours"
            # another thread changes a variable we set, and sets one of its own
            other = threading.Thread(target=lambda: os.environ.update(MTEB_VLLM_T_THEIRS_LATER="theirs",
                                                                      MTEB_VLLM_T_OTHER="theirs"))
            other.start()
            other.join()
            with EnvironGuard():  # nested: the inner block's changes are put back, then the outer's
                os.environ["MTEB_VLLM_T_INNER"] = "inner"
            assert "MTEB_VLLM_T_INNER" not in os.environ
        assert "MTEB_VLLM_T_ADDED" not in os.environ
        assert os.environ["MTEB_VLLM_T_CHANGED"] == "caller" and os.environ["MTEB_VLLM_T_REMOVED"] == "caller"
        assert os.environ["MTEB_VLLM_T_THEIRS_LATER"] == "theirs", "a later change by another thread was reverted"
        assert os.environ["MTEB_VLLM_T_OTHER"] == "theirs", "another thread's variable was removed"
        assert type(os.environ) is os._Environ  # the recorder is gone with the last block
    finally:
        for key in [k for k in os.environ if k.startswith("MTEB_VLLM_T_")]:
            del os.environ[key]


def test_a_child_forked_inside_a_block_gets_the_plain_environment():
    with EnvironGuard():
        os.environ["MTEB_VLLM_T_PARENT"] = "x"
        pid = os.fork()
        if pid == 0:  # the child: no block open, nothing recorded, os.environ as Python made it
            from mteb_vllm import process_state

            os._exit(0 if type(os.environ) is os._Environ and not process_state._open else 1)
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert "MTEB_VLLM_T_PARENT" not in os.environ


def test_wrappers_built_in_threads_leave_other_threads_variables_alone():
    """Issue 18: the constructor snapshot and restored the whole environment, deleting what another thread set
    while a wrapper was being built (engine starts take seconds to a minute). Here a backend factory holds the
    constructor open while the main thread sets a variable; several wrappers are built and used at once."""
    inside, release = threading.Barrier(4), threading.Event()

    def slow_factory(config, **options):
        os.environ["MTEB_VLLM_T_ENGINE"] = "set while starting"  # as vLLM's start sets its own
        inside.wait(timeout=30)
        release.wait(timeout=30)
        return FakeBackend(config)

    register_backend("fake-slow-start", slow_factory)
    results, errors = {}, []

    def build_and_use(i):
        try:
            with VllmEncoderWrapper("fake/encoder", backend="fake-slow-start") as wrapper:
                results[i] = wrapper.embed_texts([f"text {i}", "shared"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=build_and_use, args=(i,)) for i in range(3)]
    try:
        for t in threads:
            t.start()
        inside.wait(timeout=30)  # every constructor is inside its backend start now
        os.environ["MTEB_VLLM_T_USER"] = "set by the user meanwhile"
        release.set()
        for t in threads:
            t.join(timeout=60)
        assert not errors and sorted(results) == [0, 1, 2]
        assert all(np.array_equal(results[0][1], r[1]) for r in results.values())
        assert os.environ.get("MTEB_VLLM_T_USER") == "set by the user meanwhile"
        assert "MTEB_VLLM_T_ENGINE" not in os.environ  # what the starts set is put back
    finally:
        BACKENDS.pop("fake-slow-start")
        os.environ.pop("MTEB_VLLM_T_USER", None)
