"""Where mteb-vllm keeps files of its own: one user cache folder, overridable by ``MTEB_VLLM_CACHE``."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$MTEB_VLLM_CACHE``, else ``$XDG_CACHE_HOME/mteb-vllm``, else ``~/.cache/mteb-vllm`` (not created here)."""
    base = os.environ.get("MTEB_VLLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mteb-vllm")
    return Path(base)


def default_embedding_cache_dir() -> Path:
    """The CLI's default embedding/score cache folder."""
    return user_cache_dir() / "embeddings"
