"""Leave the caller's process as it was found: what starting an in-process vLLM engine changes, put back.

Why: mteb-vllm is a library that runs inside a researcher's process, next to their own torch code, seeds and
thread settings. Starting vLLM (in-process on CPU, which is what makes it fast there) changes process-wide
state as a side effect:

- environment variables: ours for the engine, and vLLM's own (``LOCAL_WORLD_SIZE``, ``VLLM_DIST_IDENT``,
  ``NUMEXPR_MAX_THREADS``, ``TORCHINDUCTOR_*``, ``LD_PRELOAD`` ...);
- the random number generators: the worker reseeds ``random``, ``numpy`` and ``torch`` with its seed;
- ``torch.set_num_threads``: vLLM's CPU worker replaces it with a function that ignores every call;
- the garbage collector's frozen generation: vLLM freezes the whole heap after start and unfreezes it all at
  shutdown, whoever froze it.

:class:`StartGuard` snapshots each before the start and restores it after, on success and on failure alike.
The engine keeps working: vLLM reads its settings while it starts, not afterwards (tested).
"""

from __future__ import annotations

import gc
import os
import random
import sys
from typing import Any

from .gc_pause import caller_freeze_count


def _snapshot_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"random": random.getstate()}
    if "numpy" in sys.modules:
        import numpy as np

        state["numpy"] = np.random.get_state()
    if "torch" in sys.modules:
        import torch

        state["torch"] = torch.get_rng_state()
        # is_initialized() only reads torch's flag; is_available() would initialise the CUDA driver here and
        # make vLLM's fork of its engine processes fail (see mteb_vllm.gpu)
        if torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["random"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "torch" in state or "torch" in sys.modules:
        import torch

        if "torch" in state:
            torch.set_rng_state(state["torch"])
        if "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])


def restore_environ(snapshot: dict[str, str]) -> None:
    """Make ``os.environ`` equal to ``snapshot`` again (added keys removed, changed ones put back)."""
    for key in [k for k in os.environ if k not in snapshot]:
        del os.environ[key]
    for key, value in snapshot.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


class StartGuard:
    """Snapshot process state before an engine start; :meth:`restore` puts it back.

    Use as a context manager around the start. The gc freeze is the one piece that outlives the start: vLLM
    freezes the heap when it is ready, and its shutdown unfreezes everything. :meth:`after_close` restores
    the caller's frozen set after the engine is gone (see :func:`refreeze_if_needed`).
    """

    def __init__(self) -> None:
        self.environ = dict(os.environ)
        self.rng = _snapshot_rng()
        self.host_frozen = caller_freeze_count()
        self.torch_threads: tuple[Any, int] | None = None
        if "torch" in sys.modules:
            import torch

            self.torch_threads = (torch.set_num_threads, torch.get_num_threads())

    def __enter__(self) -> StartGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        restore_environ(self.environ)
        _restore_rng(self.rng)
        if self.torch_threads is not None or "torch" in sys.modules:
            import torch

            setter, threads = self.torch_threads or (torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads = setter
            if torch.get_num_threads() != threads:
                setter(threads)
        # vLLM froze the heap at the end of its start (and we may have frozen it before): a caller that froze
        # nothing gets a heap with nothing frozen back. A caller that froze objects itself keeps them frozen;
        # what the start froze on top cannot be told apart from them and stays frozen with them.
        if self.host_frozen == 0:
            gc.unfreeze()

    def after_close(self) -> None:
        """vLLM's shutdown unfreezes the whole heap; a caller that had frozen objects gets them frozen again."""
        if self.host_frozen and gc.get_freeze_count() == 0:
            gc.freeze()
