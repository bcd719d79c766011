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

The environment is shared by every thread of the process, and a researcher's other threads may set variables
while an engine starts or encodes. So it is not snapshot and put back as a whole (that reverted what other
threads set meanwhile): :class:`EnvironGuard` records which variables *this thread* sets or removes inside
the block (our code and the vLLM code it calls), and afterwards puts back only those, and only where the
value is still the one this thread left (a later change by anyone else is theirs to keep).

The cyclic garbage collector is the other piece of process state we touch, on purpose: :func:`paused_gc`
and :func:`frozen_heap` keep it from walking millions of long-lived objects again and again, and give the
caller's setting back afterwards. Why: importing vLLM creates a few million objects (modules, functions,
classes), and every so many allocations the collector walks the objects alive, including everything mteb, torch
and transformers left behind. Measured here after ``import mteb``: ``from vllm import LLM`` took 6.3 s with the
collector on and 5.0 s with it paused. Imports rarely leave cycles behind; whatever they do is collected as soon
as the collector runs again. Reference counting keeps freeing memory the whole time.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import sys
import threading
from collections.abc import Iterator
from typing import Any


# --- the garbage collector: paused and frozen around the work, as the caller had it afterwards -----------
#: Both context managers count open blocks across threads: two wrappers encoding in two threads must not have
#: the first one to finish switch the collector back on (or unfreeze the heap) under the other.
_gc_lock = threading.Lock()
_paused = 0  # paused_gc blocks open
_was_enabled = False  # the collector's setting when the first of them opened
_frozen = 0  # frozen_heap blocks open
_holding = False  # True while frozen_heap holds the freeze: objects frozen then are ours, not the caller's


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the cyclic collector inside the block; restore the caller's setting afterwards.

    Nested and concurrent use is safe: only the last block to close turns the collector back on, and a
    collector the caller had switched off stays off.
    """
    global _paused, _was_enabled
    with _gc_lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
        _paused += 1
        gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _paused -= 1
            if _paused == 0 and _was_enabled:
                gc.enable()


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Move every object alive now out of the collector's sight for the block, and back afterwards.

    Why: after vLLM is loaded the heap holds over a million long-lived objects (its modules and the caller's).
    An encode call allocates enough (token lists, request objects, outputs) to trigger several full
    collections, each walking that whole heap: 0.6 s of GC in a 12 s encode of 8,000 short texts here, 0.1 s
    with the heap frozen (and 7 % less wall time). ``gc.freeze`` and ``gc.unfreeze`` splice lists, O(1), and
    young objects are still collected. Afterwards everything is collectable again, as the caller had it.
    Blocks opened while one is open (nested, or in another thread) share its freeze, which the last of them
    to close undoes. A block is a no-op when the caller froze objects itself (unfreezing would touch those);
    objects the caller freezes *during* a block are unfrozen with ours (``gc`` cannot tell them apart).
    """
    global _frozen, _holding
    with _gc_lock:
        if _frozen == 0 and not gc.get_freeze_count():
            gc.freeze()
            _holding = True
        _frozen += 1
    try:
        yield
    finally:
        with _gc_lock:
            _frozen -= 1
            if _frozen == 0 and _holding:
                _holding = False
                gc.unfreeze()


def caller_freeze_count() -> int:
    """How many objects the *caller* froze (0 while the freeze in force is :func:`frozen_heap`'s own)."""
    return 0 if _holding else gc.get_freeze_count()


# --- an engine start: environment, random number generators, torch threads, the frozen heap ---------------

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


class _RecordingEnviron(os._Environ):  # type: ignore[name-defined]
    """``os.environ``'s own class, plus a note to the open :class:`EnvironGuard` blocks of the writing thread.

    Installed on the ``os.environ`` object (its ``__class__``) only while a block is open anywhere; reads,
    writes and ``putenv`` behave exactly as before."""

    def __setitem__(self, key: str, value: str) -> None:
        before = self._data.get(self.encodekey(key))
        super().__setitem__(key, value)
        _note(key, None if before is None else self.decodevalue(before), value)

    def __delitem__(self, key: str) -> None:
        before = self._data.get(self.encodekey(key))
        super().__delitem__(key)
        _note(key, None if before is None else self.decodevalue(before), None)


_env_lock = threading.Lock()
_open: dict[int, list[EnvironGuard]] = {}  # thread id -> its open blocks, innermost last
_installed_on: Any = None  # the environ object whose class was swapped, while any block is open


def _note(key: str, before: str | None, after: str | None) -> None:
    for guard in _open.get(threading.get_ident(), ()):
        guard._record(key, before, after)


class EnvironGuard:
    """Put back the environment variables this thread set or removed inside the block, unless someone changed
    them since.

    Why not a snapshot of the whole environment: another thread's variable set while an engine starts (seconds
    to a minute) would be reverted. Why a record of writes and not a list of names: vLLM sets variables of its
    own (``LOCAL_WORLD_SIZE``, ``VLLM_DIST_IDENT``, ``LD_PRELOAD`` ... and more with each release), all from the
    thread that starts it. Blocks nest; each one puts back what was written while it was open. Writes that do
    not go through ``os.environ`` (C code calling ``setenv``) are invisible here, as they are to Python.
    """

    def __init__(self) -> None:
        #: variable -> (its value before this block first changed it, the value this thread last left)
        self.changes: dict[str, tuple[str | None, str | None]] = {}
        self._thread: int | None = None

    def __enter__(self) -> EnvironGuard:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def open(self) -> None:
        global _installed_on
        with _env_lock:
            if self._thread is not None:
                return
            self._thread = threading.get_ident()
            _open.setdefault(self._thread, []).append(self)
            if _installed_on is None and type(os.environ) is os._Environ:  # type: ignore[attr-defined]
                os.environ.__class__ = _RecordingEnviron
                _installed_on = os.environ

    def _record(self, key: str, before: str | None, after: str | None) -> None:
        first = self.changes[key][0] if key in self.changes else before
        self.changes[key] = (first, after)

    def restore(self) -> None:
        """Stop recording, then put back every variable this block changed whose value is still the one this
        thread left. Idempotent."""
        global _installed_on
        with _env_lock:
            if self._thread is None:
                return
            blocks = _open.get(self._thread, [])
            if self in blocks:
                blocks.remove(self)
            if not blocks:
                _open.pop(self._thread, None)
            self._thread = None
            if not _open and _installed_on is not None:
                if type(_installed_on) is _RecordingEnviron:
                    _installed_on.__class__ = os._Environ  # type: ignore[attr-defined]
                _installed_on = None
        changes, self.changes = self.changes, {}
        for key, (before, ours) in changes.items():
            if os.environ.get(key) != ours:  # changed by someone else since: theirs to keep
                continue
            if before is None:
                os.environ.pop(key, None)
            elif before != ours:
                os.environ[key] = before


def _forget_guards_in_child() -> None:
    """A child forked while a block was open (in any thread) starts with none: the blocks and the threads that
    would close them stayed in the parent, and its ``os.environ`` is the plain one again."""
    global _env_lock, _installed_on
    _env_lock = threading.Lock()
    _open.clear()
    if _installed_on is not None and type(_installed_on) is _RecordingEnviron:
        _installed_on.__class__ = os._Environ  # type: ignore[attr-defined]
    _installed_on = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_guards_in_child)


class StartGuard:
    """Snapshot process state before an engine start; :meth:`restore` puts it back.

    Use as a context manager around the start. The gc freeze is the one piece that outlives the start: vLLM
    freezes the heap when it is ready, and its shutdown unfreezes everything. :meth:`after_close` restores
    the caller's frozen set after the engine is gone.
    """

    def __init__(self) -> None:
        self.environ = EnvironGuard()
        self.environ.open()
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
        self.environ.restore()
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
