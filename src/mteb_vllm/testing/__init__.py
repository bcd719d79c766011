"""Test doubles that sit behind the same seams as the real thing (as mteb ships mock tasks, httpx a mock
transport): :class:`FakeBackend` computes deterministic vectors and scores from the token ids it is given,
so the wrappers' logic (prompts, dedup, truncation, NaN handling, ordering, caching, remote fan-out) can be
tested in seconds and bit for bit, with no engine and no weights. :class:`FakeServer` serves a FakeBackend over
the HTTP API of ``vllm serve`` (embeddings, classify, score), with latency, capacity and failures to order,
for fleet tests and simulations.
"""

from __future__ import annotations

from .fake_backend import FakeBackend, byte_tokenizer
from .fake_server import FakeServer, FakeServerConfig

__all__ = ["FakeBackend", "FakeServer", "FakeServerConfig", "byte_tokenizer"]
