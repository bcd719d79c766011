"""Inference backends: where embeddings and scores are computed.

The wrappers (encoder, cross-encoder) own the mteb protocol, prompts, deduplication, truncation and
NaN checks; a backend only runs token ids through a model. See :class:`Backend`.
"""

from .base import Backend, TokenizedInput

__all__ = ["Backend", "TokenizedInput", "LocalVllmBackend"]


def __getattr__(name: str):  # lazy: importing the package must not import vllm/torch
    if name == "LocalVllmBackend":
        from .local import LocalVllmBackend

        return LocalVllmBackend
    raise AttributeError(name)
