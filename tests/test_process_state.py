"""Starting and closing a real in-process engine leaves the caller's process as it was: environment, random
number generators, torch's thread setting, and the garbage collector's frozen objects (issue 9)."""

from __future__ import annotations

import gc
import os
import random

import numpy as np
import pytest
import torch

from mteb_vllm import VllmEncoderWrapper
from mteb_vllm.errors import EngineStartError
from mteb_vllm.process_state import StartGuard, restore_environ

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
        assert encoder.backend.started and encoder.backend.in_process, encoder.backend.mode_reason
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
        VllmEncoderWrapper(minilm_path, dtype="float32", max_model_len=100_000)  # beyond the model's positions
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
    restore_environ({k: v for k, v in os.environ.items() if k != "MTEB_VLLM_TEST_KEEP"})
    assert "MTEB_VLLM_TEST_KEEP" not in os.environ
