"""``CachedBackend``: every embedding and score kept on disk, keyed by model fingerprint and exact engine input.

Why at the backend boundary: what reaches a backend is final (prompt applied, tokenized, truncated, pair
segments set), so a key made of it can never be stale, and both wrappers and every backend (local, remote,
fake) get the cache by wrapping. Why not mteb's ``CachedEmbeddingWrapper``: its key is the text alone (no
model, revision, prompt, truncation or precision), it writes only after a whole ``encode`` call, and it has no
reranker path.

What computes the numbers is part of the namespace (:func:`mteb_vllm.identity.engine_identity`): the local
engine's vLLM and torch versions and device class, or a fleet's endpoints and reported identity. So a fleet never
fills the local engine's namespace, an upgrade or another GPU starts a new one, and nothing is reused with only a
warning.

Under :func:`refreshing` (``mteb-vllm run --overwrite``, ``run_tasks(overwrite=True)``) entries stored before
are not trusted: every input is computed again and replaces its entry, and what was computed inside is shared
as usual (tasks with one corpus compute it once).

Misses are computed in pieces and each piece is committed before the next starts, so a run killed in the
middle of a million-document corpus loses at most the piece in flight. A piece is at most :data:`FLUSH_ROWS`
inputs or :data:`FLUSH_TOKENS` tokens (the local engine drains every 4096 inputs anyway), and at most about
:data:`FLUSH_SECONDS` of work at the rate the previous pieces ran: a 7B model on a CPU would otherwise hold
minutes of work unflushed. Against a fleet, a piece is never smaller than what the endpoints hold in flight at
once (``capacity``), so committing never leaves servers idle. The engine behind it may be lazy: a call whose
inputs are all cached never starts it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..cache_store import CacheError, Manifest, Namespace, item_key
from ..identity import engine_identity, fingerprint, fingerprint_fields
from ..precision import unresolved
from .protocol import BackendInfo, BackendLayer, PoolingTask, TokenizedInput

logger = logging.getLogger(__name__)

#: A piece of misses handed to the engine and committed together (the local engine drains every 4096 inputs).
FLUSH_ROWS = 4096
#: ... or fewer inputs when they are long: at most this many tokens per piece (64 CPU engine steps).
FLUSH_TOKENS = 262_144
#: ... and about this much work per piece, at the measured rate (the first piece is small, to measure it).
FLUSH_SECONDS = 30.0
#: The first piece's token budget and the smallest one (one CPU engine step of 4096 tokens, four times).
MIN_FLUSH_TOKENS = 16_384


_REFRESH: contextvars.ContextVar[bool] = contextvars.ContextVar("mteb_vllm_cache_refresh", default=False)


@contextlib.contextmanager
def refreshing(enabled: bool = True) -> Iterator[None]:
    """Inside, cached backends trust no entry stored before: they compute every input again and replace its
    entry. Entries computed inside are read as usual. Why (``--overwrite``): a user who asks for a task to be
    evaluated again does not trust what is saved, and that must include the vectors behind the scores.
    """
    token = _REFRESH.set(bool(enabled) or _REFRESH.get())
    try:
        yield
    finally:
        _REFRESH.reset(token)


@dataclass
class CacheStats:
    """Inputs answered from the cache and inputs the engine computed, for one call or a whole run."""

    cached: int = 0
    computed: int = 0
    stored: int = 0
    damaged: int = 0

    def add(self, other: CacheStats) -> None:
        self.cached += other.cached
        self.computed += other.computed
        self.stored += other.stored
        self.damaged += other.damaged

    def line(self) -> str:
        return f"{self.cached} cached, {self.computed} computed"


class CachedBackend(BackendLayer):
    """Wraps ``inner``; same :class:`~mteb_vllm.backends.protocol.Backend` protocol.

    Args:
        inner: The backend that computes misses.
        cache_dir: Folder of the cache (one SQLite file per model fingerprint).
        config: The wrapper's :class:`~mteb_vllm.config.EngineConfig` (part of the fingerprint).
        close_inner: Close ``inner`` with this backend (the wrapper created it).
        max_bytes: Cap on one namespace file's size (beyond it, like a full disk: a warning, no more writes).
        name: The model's name for ``mteb-vllm cache info`` (the results name; default: the model path or id).

    A cache folder that cannot be created or opened is reported with a warning and the run goes on uncached:
    the cache exists to save work, never to stop it. The same holds for a full disk in the middle of a run.
    """

    def __init__(self, inner: Any, cache_dir: str | os.PathLike[str], *, config: Any = None, close_inner: bool = True,
                 max_bytes: int | None = None, name: str | None = None):
        super().__init__(inner)
        self.close_inner = close_inner
        self.cache_dir = os.path.expanduser(str(cache_dir))
        self._stats = CacheStats()
        self.last = CacheStats()
        self._config, self._name, self._max_bytes = config, name, max_bytes
        # One wrapper may be shared by threads; the namespace's connection runs one transaction at a time.
        self._lock = threading.RLock()
        self.fingerprint = ""
        self.namespace: Namespace | None = None
        self._opened = False
        if not unresolved(inner.info.dtype):
            self._open()

    def _open(self) -> None:
        """Fingerprint the model as it will compute, and open its namespace (once).

        Why not always at construction: a lazily started GPU engine under ``dtype="auto"`` learns its precision
        (vLLM's choice: float16 on GPUs without bfloat16, bfloat16 on others) only when it starts, and a
        fingerprint taken before would let a V100 run and an A100 run share one namespace. Such a backend is
        started first, so its first call computes the fingerprint from the precision actually used.
        """
        self._opened = True
        info = self.inner.info
        if unresolved(info.dtype):
            self.start()
            info = self.inner.info
        fields = fingerprint_fields(info, self._config, engine_identity(self.inner))
        self.fingerprint = fingerprint(fields)
        manifest = Manifest(self.fingerprint, fields,
                            name=self._name or str(getattr(self._config, "model", "") or info.model),
                            vllm=fields.get("vllm"))
        try:
            self.namespace = Namespace(self.cache_dir, manifest, max_bytes=self._max_bytes)
        except CacheError as exc:
            logger.warning("%s; running without the cache", exc)
            self.namespace = None

    @property
    def stats(self) -> CacheStats | None:
        """Inputs answered from the cache and computed, over this backend's life; None once the cache fell back
        to off (a folder that cannot be opened): then nothing is cached, and no count should suggest otherwise."""
        return None if self._opened and self.namespace is None else self._stats

    # --- the Backend protocol: the rest is the inner backend's (BackendLayer) ----------------------------------
    @property
    def info(self) -> BackendInfo:
        inner = self.inner.info
        cache = (f"{self.cache_dir} ({self.fingerprint})" if self.namespace else
                 "off" if self._opened else f"{self.cache_dir} (opened at the first call)")
        details = {**inner.details, "cache": cache}
        return dataclasses.replace(inner, kind=f"cached {inner.kind}", details=details)

    def pool(self, inputs: list[TokenizedInput], task: PoolingTask, *, desc: str = "") -> np.ndarray:
        with self._lock:
            if not self._opened:
                self._open()
            return self._pool(inputs, task, desc)

    def _pool(self, inputs: list[TokenizedInput], task: PoolingTask, desc: str) -> np.ndarray:
        call = CacheStats()
        if self.namespace is None or not inputs:
            out = self.inner.pool(inputs, task, desc=desc)
            call.computed = len(inputs)
            self._account(call)
            return out
        keys = [item_key(task, item.token_ids, item.token_type_ids, item.prompt_length) for item in inputs]
        refresh = _REFRESH.get()
        found = self.namespace.get(list(dict.fromkeys(keys)), fresh_only=refresh)
        call.damaged = self.namespace.corrupt_rows
        self.namespace.corrupt_rows = 0
        rows: list[np.ndarray | None] = [found.get(k) for k in keys]
        missing = [i for i, row in enumerate(rows) if row is None]
        call.cached = len(inputs) - len(missing)
        if missing:
            self._compute(inputs, keys, rows, missing, task, desc, call, refresh)
        self._account(call)
        return np.stack(rows).astype(np.float32, copy=False)  # type: ignore[arg-type]

    def _compute(self, inputs: list[TokenizedInput], keys: list[bytes], rows: list[np.ndarray | None],
                 missing: list[int], task: PoolingTask, desc: str, call: CacheStats, refresh: bool) -> None:
        """Misses piece by piece: compute, store (committed), next. A row with NaN/Inf is returned, not stored,
        so the wrapper's precision policy sees it and a bad value is never served again."""
        from tqdm.auto import tqdm

        show = bool(desc) and not os.environ.get("MTEB_VLLM_NO_PROGRESS")
        started, tokens = time.perf_counter(), 0
        with tqdm(total=len(inputs), initial=call.cached, desc=desc or "cache", unit="text", disable=not show,
                  dynamic_ncols=True) as bar:
            bar.set_postfix_str(f"{call.cached} cached", refresh=False)
            pieces = _Pieces(missing, inputs, self.inner.capacity)
            for piece in pieces:
                piece_started = time.perf_counter()
                out = self.inner.pool([inputs[i] for i in piece], task)
                pieces.ran(time.perf_counter() - piece_started)
                finite = np.isfinite(out).reshape(len(piece), -1).all(axis=1)
                for j, i in enumerate(piece):
                    rows[i] = out[j]
                call.stored += self.namespace.put(((keys[i], out[j]) for j, i in enumerate(piece) if finite[j]),
                                                  replace=refresh)
                call.computed += len(piece)
                tokens += sum(len(inputs[i]) for i in piece)
                bar.update(len(piece))
                rate = tokens / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix_str(f"{call.cached} cached, {call.computed} computed, tok_s={rate:,.0f}", refresh=False)

    def _account(self, call: CacheStats) -> None:
        self.last = call
        self._stats.add(call)

    def close(self) -> None:
        with self._lock:
            if self.namespace is not None:
                self.namespace.close()
            if self.close_inner:
                self.inner.close()


class _Pieces:
    """The misses in committed pieces, each sized to the rate the ones before it ran at (module docstring)."""

    def __init__(self, indices: list[int], inputs: list[TokenizedInput], capacity: tuple[int, int] | None):
        self.indices, self.inputs, self.pos = indices, inputs, 0
        floor_rows, floor_tokens = capacity or (0, 0)
        self.max_rows = max(FLUSH_ROWS, floor_rows)
        self.max_tokens = max(FLUSH_TOKENS, floor_tokens)
        self.min_tokens = max(MIN_FLUSH_TOKENS, floor_tokens)
        self.budget = self.min_tokens
        self._tokens = 0

    def __iter__(self):
        while self.pos < len(self.indices):
            piece, tokens = [], 0
            while self.pos < len(self.indices):
                n = len(self.inputs[self.indices[self.pos]])
                if piece and (len(piece) >= self.max_rows or tokens + n > self.budget):
                    break
                piece.append(self.indices[self.pos])
                tokens += n
                self.pos += 1
            self._tokens = tokens
            yield piece

    def ran(self, seconds: float) -> None:
        """The last piece took ``seconds``: the next holds about :data:`FLUSH_SECONDS` at that rate."""
        rate = self._tokens / max(seconds, 1e-6)
        self.budget = int(min(self.max_tokens, max(self.min_tokens, rate * FLUSH_SECONDS)))
