"""Inference backends: where embeddings and scores are computed.

The wrappers (encoder, cross-encoder) own the mteb protocol, prompts, deduplication, truncation and
NaN checks; a backend only runs token ids through a model. See :class:`Backend`.

Backends are made by name through :func:`create_backend` ("local", "remote", "fake"), each one module,
imported only when asked for: a missing optional dependency removes one backend with an error that says
what to install, never the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import EngineArgumentError
from .protocol import Backend, BackendInfo, BackendLayer, BaseBackend, PoolingTask, TokenizedInput

if TYPE_CHECKING:
    from ..config import EngineConfig

__all__ = ["Backend", "BackendInfo", "BackendLayer", "BaseBackend", "PoolingTask", "TokenizedInput", "BACKENDS",
           "create_backend", "register_backend", "LocalVllmBackend"]

#: Factory name -> "module:attribute" of a callable ``(config: EngineConfig, **options) -> Backend``. Every
#: factory takes ``lazy: bool`` (start the engine at the first call); "remote" also takes ``endpoints`` and
#: ``options`` (a ``RemoteOptions``).
BACKENDS: dict[str, str] = {
    "local": "mteb_vllm.backends.local:LocalVllmBackend",
    "remote": "mteb_vllm.backends.remote:RemoteBackend",
    "fake": "mteb_vllm.testing.fake_backend:FakeBackend",
}


def register_backend(name: str, target: str | Callable[..., Backend]) -> None:
    """Make ``backend=name`` build backends with ``target`` (a callable or "module:attribute")."""
    BACKENDS[name] = target  # type: ignore[assignment]


def _factory(name: str) -> Callable[..., Backend]:
    target = BACKENDS.get(name)
    if target is None and ":" in name:  # "package.module:factory": a factory every process can import
        target = name
    if target is None:
        raise EngineArgumentError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)} or pass a backend object")
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def create_backend(backend: str | Backend | None, config: EngineConfig, **options: Any) -> tuple[Backend, bool]:
    """The backend a wrapper runs on, and whether the wrapper owns it (and must close it).

    ``backend`` is a running backend object (shared, not owned), a factory name, a ``"module:callable"`` path
    (importable in every process, e.g. by worker processes), or None: "remote" when ``endpoints`` are given,
    else "local".
    """
    if backend is not None and not isinstance(backend, str):
        if not isinstance(backend, BaseBackend):
            raise EngineArgumentError(
                f"backend must be a backend name ({sorted(BACKENDS)}) or a running backend (a "
                f"mteb_vllm.backends.BaseBackend, such as other_wrapper.engine), not {type(backend).__name__}")
        return backend, False
    name = backend or ("remote" if options.get("endpoints") else "local")
    if name != "remote" and options.get("endpoints"):
        raise EngineArgumentError(f"endpoints= needs the remote backend, not backend={name!r}")
    if name != "remote":
        options.pop("endpoints", None)
        if options.pop("options", None) is not None:
            raise EngineArgumentError("remote_options= is for endpoints (the remote backend), not backend="
                                      f"{name!r}")
    options = {k: v for k, v in options.items() if v is not None}
    return _factory(name)(config, **options), True


def __getattr__(name: str):  # lazy: importing the package must not import vllm/torch
    if name == "LocalVllmBackend":
        from .local import LocalVllmBackend

        return LocalVllmBackend
    raise AttributeError(name)
