"""The seam between the wrappers and the inference engines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

PoolingTask = Literal["embed", "classify"]


@dataclass(frozen=True)
class TokenizedInput:
    """One request, already tokenized and truncated by the wrapper.

    Tokenizing in the wrapper (not the engine) is what lets us count truncations, truncate only the
    document side of a pair, and send each text's tokens exactly once.
    """

    token_ids: list[int]
    token_type_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.token_ids)


@runtime_checkable
class Backend(Protocol):
    """What a wrapper needs from an engine: a tokenizer, a length limit and one pooling call."""

    model: str
    max_model_len: int

    @property
    def tokenizer(self) -> Any:
        """A Hugging Face tokenizer equal to the one the engine uses."""

    def pool(self, inputs: list[TokenizedInput], task: PoolingTask, *, desc: str = "") -> np.ndarray:
        """Run every input through the model; float32 array, one row per input, input order.

        ``embed`` returns [n, dim] pooled embeddings; ``classify`` returns [n, num_labels] scores.
        """

    def close(self) -> None:
        """Release the engine (idempotent)."""
