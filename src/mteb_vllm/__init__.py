"""mteb-vllm: MTEB evaluation of embedding models and rerankers with vLLM as the engine.

    import mteb
    from mteb_vllm import VllmEncoderWrapper

    if __name__ == "__main__":  # vLLM spawns worker processes
        model = VllmEncoderWrapper("intfloat/e5-small")
        mteb.evaluate(model, mteb.get_task("STS12"))
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "EngineConfig",
    "VllmWrapperBase",
    "VllmEncoderWrapper",
    "VllmCrossEncoderWrapper",
    "ScoreTemplate",
    "rerank",
    "default_model_path",
    "demo_tasks",
]

_LAZY = {
    "EngineConfig": ("config", "EngineConfig"),
    "VllmWrapperBase": ("wrapper", "VllmWrapperBase"),
    "VllmEncoderWrapper": ("encoder", "VllmEncoderWrapper"),
    "VllmCrossEncoderWrapper": ("cross_encoder", "VllmCrossEncoderWrapper"),
    "ScoreTemplate": ("templates", "ScoreTemplate"),
    "rerank": ("two_stage", "rerank"),
    "default_model_path": ("defaults", "default_model_path"),
    "demo_tasks": ("demo", "demo_tasks"),
}


def __getattr__(name: str):
    # Lazy so `import mteb_vllm` (and `mteb-vllm --help`) stays fast and works without vLLM.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'mteb_vllm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__ + ["__version__"])
