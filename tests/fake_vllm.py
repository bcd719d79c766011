"""A stand-in ``vllm`` package built from the facts recorded for one vLLM release (tests/vllm_signatures/).

Why: mteb-vllm supports a range of vLLM releases, and this machine can install only some of them (and no GPU
build at all). What our code hands to vLLM (engine arguments, pooling params, the server's flags) is checked
here against each release's own signatures, recorded from its wheel by ``scripts/record_vllm_signatures.py``.
The behaviour that matters is modelled from the recorded facts, not copied: ``compress_token_type_ids``
returns what that release's annotation says, and :func:`runner_token_type_ids` unpacks the value the way that
release's model runners do (an int before 0.33, a ``(start, end)`` range from 0.33), so a value of the wrong
form fails here as it would inside the engine.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

SIGNATURES = Path(__file__).parent / "vllm_signatures"


def versions() -> list[str]:
    return sorted((p.stem.removeprefix("vllm-") for p in SIGNATURES.glob("vllm-*.json")),
                  key=lambda v: tuple(int(x) for x in v.split(".")))


def signature(version: str) -> dict[str, Any]:
    return json.loads((SIGNATURES / f"vllm-{version}.json").read_text())


def range_form(sig: dict[str, Any]) -> bool:
    """Whether this release passes segment ids as a (start, end) range (else: the first type-1 position)."""
    returns = (sig["compress_token_type_ids"] or {}).get("returns") or ""
    return returns.replace(" ", "").startswith("tuple")


def runner_token_type_ids(sig: dict[str, Any], value: Any, length: int) -> list[int]:
    """The segment ids a model runner of this release builds from ``compressed_token_type_ids``."""
    if range_form(sig):
        start, end = value  # TypeError for an int, as in the release's runners
        return [1 if start <= i < end else 0 for i in range(length)]
    if not isinstance(value, int):
        raise TypeError(f"this release's runners compare positions with an int, got {value!r}")
    return [1 if i >= value else 0 for i in range(length)]


def _compress(sig: dict[str, Any]):
    def compress_token_type_ids(token_type_ids: list[int]) -> Any:
        ones = [i for i, t in enumerate(token_type_ids) if t == 1]
        first = ones[0] if ones else len(token_type_ids)
        if not range_form(sig):
            return first
        end = ones[-1] + 1 if ones else len(token_type_ids)
        return first, end
    return compress_token_type_ids


class FakeLLM:
    """``vllm.LLM``: records its keyword arguments, the environment and the fake CUDA calls at construction,
    and refuses keywords the release does not know (``LLM(**kwargs)`` hands the rest to ``EngineArgs``)."""

    calls: list[dict[str, Any]] = []
    on_start: Any = None  #: called with the kwargs before the "engine" exists (e.g. a memory check)

    def __init__(self, model: str, **kwargs: Any):
        sig = FakeLLM.signature
        known = set(sig["llm_init"]) | set(sig["engine_args"])
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"vLLM {sig['version']}: unexpected engine arguments {unknown}")
        kwargs = {"model": model, **kwargs}
        FakeLLM.calls.append({"kwargs": kwargs, "env": dict(os.environ)})
        if FakeLLM.on_start is not None:
            FakeLLM.on_start(kwargs)
        dtype = kwargs.get("dtype", "auto")
        self.llm_engine = types.SimpleNamespace(
            model_config=types.SimpleNamespace(dtype=f"torch.{'float16' if dtype == 'auto' else dtype}",
                                               max_model_len=kwargs.get("max_model_len", 512)),
            engine_core=types.SimpleNamespace(shutdown=lambda: None))


def install(monkeypatch: Any, version: str, *, device_type: str = "cuda") -> dict[str, Any]:
    """Put a fake ``vllm`` (and the submodules mteb-vllm imports) into ``sys.modules`` for this test."""
    sig = signature(version)
    engine_args = dataclasses.make_dataclass(
        "EngineArgs", [(name, Any, dataclasses.field(default=None)) for name in sig["engine_args"]])

    class PoolingParams:
        def __init__(self, **kwargs: Any):
            for name in sig["pooling_params"]:
                setattr(self, name, kwargs.get(name))
            unknown = set(kwargs) - set(sig["pooling_params"])
            if unknown:
                raise TypeError(f"unexpected PoolingParams fields {sorted(unknown)}")

    FakeLLM.signature = sig
    FakeLLM.calls = []
    FakeLLM.on_start = None
    modules = {
        "vllm": types.ModuleType("vllm"),
        "vllm.inputs": types.ModuleType("vllm.inputs"),
        "vllm.envs": types.ModuleType("vllm.envs"),
        "vllm.platforms": types.ModuleType("vllm.platforms"),
        "vllm.entrypoints": types.ModuleType("vllm.entrypoints"),
        "vllm.entrypoints.pooling": types.ModuleType("vllm.entrypoints.pooling"),
        "vllm.entrypoints.pooling.scoring": types.ModuleType("vllm.entrypoints.pooling.scoring"),
        "vllm.entrypoints.pooling.scoring.utils": types.ModuleType("vllm.entrypoints.pooling.scoring.utils"),
    }
    root = modules["vllm"]
    root.__version__ = version
    root.__path__ = []  # a package, so submodule imports go through sys.modules
    root.LLM, root.EngineArgs, root.PoolingParams = FakeLLM, engine_args, PoolingParams
    modules["vllm.inputs"].TokensPrompt = lambda **kwargs: dict(kwargs)
    root.inputs = modules["vllm.inputs"]
    modules["vllm.envs"].disable_envs_cache = lambda: None
    root.envs = modules["vllm.envs"]
    modules["vllm.platforms"].current_platform = types.SimpleNamespace(device_type=device_type)
    root.platforms = modules["vllm.platforms"]
    if sig["compress_token_type_ids"]:
        modules["vllm.entrypoints.pooling.scoring.utils"].compress_token_type_ids = _compress(sig)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    # LocalVllmBackend.close ends with gc.collect() to free a real engine's memory. A fake engine holds none, and
    # a full collection of this test process's heap (torch, transformers, mteb loaded) costs ~0.3 s per close.
    gc_module = types.SimpleNamespace(**{n: getattr(gc, n) for n in dir(gc) if not n.startswith("__")})
    gc_module.collect = lambda generation=2: 0
    monkeypatch.setattr("mteb_vllm.backends.local.gc", gc_module)
    return sig
