"""The seam between the wrappers (mteb's protocol) and whatever runs the model.

Why the cut is here (as httpx cuts its client from its transports): everything that decides *what* is
computed (prompts, tokenization, truncation and its count, deduplication, NaN checks, score templates, the
results' metadata) lives once in the wrappers; a backend only turns token ids into pooled vectors or
scores. So the in-process engine, a fleet of ``vllm serve`` endpoints, a cache and a fake for tests are
interchangeable and give the same scores by construction.
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

    def describe(self) -> str:
        extra = ", ".join(f"{k} {v}" for k, v in self.details.items())
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.kind} backend: {self.model}{rev}, {self.dtype}, max {self.max_model_len} tokens" + (
            f", {extra}" if extra else "")


@runtime_checkable
class Backend(Protocol):
    """What a wrapper needs from an engine: a tokenizer, a length limit, a dtype and one pooling call."""

    model: str
    max_model_len: int
    dtype: str

    @property
    def tokenizer(self) -> Any:
        """A Hugging Face tokenizer equal to the one the engine uses."""

    @property
    def info(self) -> BackendInfo:
        """What this backend runs (see :class:`BackendInfo`)."""

    def pool(self, inputs: list[TokenizedInput], task: PoolingTask, *, desc: str = "") -> np.ndarray:
        """Run every input through the model; float32 array, one row per input, input order.

        ``embed`` returns [n, dim] pooled embeddings; ``classify`` returns [n, num_labels] scores.
        An empty ``inputs`` returns an array with 0 rows.
        """

    def close(self) -> None:
        """Release the engine (idempotent)."""
