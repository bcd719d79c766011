"""The seam between the wrappers (mteb's protocol) and whatever runs the model.

Why the cut is here (as httpx cuts its client from its transports): everything that decides *what* is
computed (prompts, tokenization, truncation and its count, deduplication, NaN checks, score templates, the
results' metadata) lives once in the wrappers; a backend only turns token ids into vectors (pooled, or one
per token) or scores. So the in-process engine, a fleet of ``vllm serve`` endpoints, a cache and a fake for tests are
interchangeable and give the same scores by construction.

:class:`Backend` declares everything a caller may ask of a backend, and :class:`BaseBackend` gives each a
default, as httpx's ``BaseTransport`` declares ``handle_request`` and ``close`` and every transport inherits
``close``: an engine that needs no start is always started, holds no work in flight, keeps no cache. Every
backend inherits it, so callers use these names directly and never probe for them. :class:`BackendLayer` is the
base of backends that wrap another (the cache, the sentence-transformers modules): everything but ``pool`` is
the inner backend's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

#: "embed": one pooled vector per input; "classify": a classifier's logits per input; "token_embed": every
#: token's last hidden state, the inputs' rows concatenated in order ([sum of lengths, hidden]).
PoolingTask = Literal["embed", "classify", "token_embed"]


@dataclass(frozen=True)
class TokenizedInput:
    """One request, already tokenized and truncated by the wrapper.

    Tokenizing in the wrapper (not the engine) is what lets us count truncations, truncate pairs the way the
    reference does, and send each text's tokens exactly once.

    ``pair`` is set for cross-encoder pairs: the two texts as far as their tokens survived truncation. A
    backend that cannot pass segment ids with token ids (``vllm serve``'s /score takes text pairs) sends these;
    re-tokenized, they give exactly ``token_ids``.
    """

    token_ids: list[int]
    token_type_ids: list[int] | None = None
    pair: tuple[str, str] | None = None
    #: Tokens of the prompt at the start of ``token_ids``, set only when the model's pooling leaves the prompt out
    #: (sentence-transformers' ``include_prompt=False``): the same ids then pool to another vector.
    prompt_length: int | None = None

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def second_segment_start(self) -> int | None:
        """Index of the first token of the second segment (BERT pairs), or None for a single segment."""
        if not self.token_type_ids:
            return None
        return next((i for i, t in enumerate(self.token_type_ids) if t), None)


@dataclass(frozen=True)
class BackendInfo:
    """What a backend runs, for logs, the results' metadata and cache fingerprints.

    ``revision`` is the revision actually loaded (a hub commit, ``local-<hash>`` for a local folder), or
    None when the backend cannot tell. ``dtype`` is the resolved compute precision, never "auto".
    """

    kind: str
    model: str
    revision: str | None
    dtype: str
    max_model_len: int
    details: dict[str, Any] = field(default_factory=dict)
    #: The base URLs (without credentials) a fleet's numbers come from; empty for an engine in this process. Part
    #: of the cache's namespace (:func:`mteb_vllm.identity.engine_identity`), not of :meth:`describe`.
    endpoints: tuple[str, ...] = ()

    def describe(self) -> str:
        extra = ", ".join(f"{k} {v}" for k, v in self.details.items())
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.kind} backend: {self.model}{rev}, {self.dtype}, max {self.max_model_len} tokens" + (
            f", {extra}" if extra else "")


@runtime_checkable
class Backend(Protocol):
    """What a wrapper and the run around it may ask of a backend: a tokenizer, a length limit, a dtype, one pooling
    call, and its lifecycle. :class:`BaseBackend` implements all of it with defaults."""

    #: A short name of what computes ("local", "remote", "fake", ...), in logs and cache fingerprints.
    kind: str
    model: str
    max_model_len: int
    dtype: str
    #: The backend this one wraps (a cache or module layer), or None for one that computes itself.
    inner: Backend | None
    #: Whether the engine runs (a lazily created one starts at its first call or at :meth:`start`).
    started: bool
    #: Seconds the engine took to start (0 when it has not started or needs no start).
    start_seconds: float
    #: (inputs, tokens) the backend computes at once at full speed, or None when any amount will do. A caller that
    #: hands work over in pieces (the cache commits piece by piece) makes each piece at least this large.
    capacity: tuple[int, int] | None
    #: Inputs answered from a cache and computed (a :class:`~mteb_vllm.backends.cached.CacheStats`), or None for a
    #: backend that keeps no cache.
    stats: Any

    @property
    def tokenizer(self) -> Any:
        """A Hugging Face tokenizer equal to the one the engine uses."""

    @property
    def info(self) -> BackendInfo:
        """What this backend runs (see :class:`BackendInfo`)."""

    @property
    def engine(self) -> Backend:
        """What computes, under every layer: this backend itself unless it wraps another."""

    def pool(self, inputs: list[TokenizedInput], task: PoolingTask, *, desc: str = "") -> np.ndarray:
        """Run every input through the model; float32 array, one row per input, input order.

        ``embed`` returns [n, dim] pooled embeddings; ``classify`` returns [n, num_labels] scores;
        ``token_embed`` returns every token's hidden state, the inputs' rows one after another
        ([sum of the inputs' lengths, hidden]). An empty ``inputs`` returns an array with 0 rows.
        """

    def start(self) -> None:
        """Start the engine now, if it was created lazily (idempotent)."""

    def close(self) -> None:
        """Release the engine (idempotent)."""


class BaseBackend:
    """The base of every backend: :class:`Backend`'s defaults. A subclass sets ``model``, ``max_model_len`` and
    ``dtype``, and implements :meth:`pool` and :attr:`tokenizer`; it overrides the rest where it has more to say
    (an engine that starts lazily, a fleet's capacity, a cache's counts)."""

    kind: str = "custom"
    model: str
    max_model_len: int
    dtype: str
    inner: Backend | None = None
    started: bool = True
    start_seconds: float = 0.0
    capacity: tuple[int, int] | None = None
    stats: Any = None

    @property
    def tokenizer(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no tokenizer")

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(kind=self.kind, model=self.model, revision=None, dtype=self.dtype,
                           max_model_len=self.max_model_len)

    @property
    def engine(self) -> Backend:
        return self if self.inner is None else self.inner.engine

    def pool(self, inputs: list[TokenizedInput], task: PoolingTask, *, desc: str = "") -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not pool")

    def start(self) -> None:
        """Nothing to start by default."""

    def close(self) -> None:
        """Nothing to release by default."""


class BackendLayer(BaseBackend):
    """A backend over another one (``inner``): what it runs, its tokenizer, limits and lifecycle are the inner
    backend's; a layer overrides :meth:`pool` and what it adds (the cache its counts and its line in ``info``)."""

    def __init__(self, inner: Backend):
        self.inner = inner

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.inner.kind

    @property
    def model(self) -> str:  # type: ignore[override]
        return self.inner.model

    @property
    def max_model_len(self) -> int:  # type: ignore[override]
        return self.inner.max_model_len

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.inner.dtype

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    @property
    def info(self) -> BackendInfo:
        return self.inner.info

    @property
    def started(self) -> bool:  # type: ignore[override]
        return self.inner.started

    @property
    def start_seconds(self) -> float:  # type: ignore[override]
        return self.inner.start_seconds

    @property
    def capacity(self) -> tuple[int, int] | None:  # type: ignore[override]
        return self.inner.capacity

    @property
    def stats(self) -> Any:
        return self.inner.stats

    def pool(self, inputs: list[TokenizedInput], task: PoolingTask, *, desc: str = "") -> np.ndarray:
        return self.inner.pool(inputs, task, desc=desc)

    def start(self) -> None:
        self.inner.start()

    def close(self) -> None:
        self.inner.close()
