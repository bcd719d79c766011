"""``VllmWrapperBase``: one model, one backend, the mteb metadata that names the results."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import EngineConfig, check_path_name, engine_arguments_doc, split_engine_kwargs
from .errors import UnsupportedTaskError
from .precision import PrecisionGuard, canonical, unresolved
from .process_state import EnvironGuard
from .resolve import resolve_model
from .tokenizing import check_texts

if TYPE_CHECKING:
    from mteb.models import ModelMeta

    from .backends.protocol import Backend

logger = logging.getLogger(__name__)


class VllmWrapperBase:
    """Owns one backend for ``model`` and the ``ModelMeta`` mteb files results under.

    Args:
        model: Hugging Face id, local directory, or an mteb ``ModelMeta`` (its name and revision are used).
        revision: Hub revision to load. Default: the revision mteb's registry pins for the model, else the
            hub's default branch. Not allowed for a local folder, which is identified by its content hash.
        model_name: The name mteb knows the model by, when ``model`` is a local path; used for registry
            prompts and as the results folder name.
        backend: Where the model runs: "local" (default: an in-process vLLM engine), "remote" (``vllm serve``
            endpoints, see ``endpoints``), "fake" (:class:`mteb_vllm.testing.FakeBackend`), or a running
            backend to share (a :class:`~mteb_vllm.backends.BaseBackend`, such as ``other_wrapper.engine``; engine
            arguments are then ignored, and it is not closed by this wrapper).
        endpoints: URLs of ``vllm serve`` endpoints; implies ``backend="remote"``.
        remote_options: :class:`~mteb_vllm.backends.remote.RemoteOptions` for ``endpoints`` (timeouts, API key,
            batch sizes); default: its defaults and environment variables.
        cache_dir: Keep every embedding and score in this folder, keyed by the model's fingerprint and the
            exact engine input (:class:`~mteb_vllm.backends.cached.CachedBackend`), so a rerun or another task
            with the same texts computes nothing twice, and a killed run loses at most its last unflushed rows.
        lazy_start: Start the engine at the first encode/predict call instead of now. Everything that can fail
            before (model files, prompts, arguments) still fails now; a run whose work is all done (resumed
            tasks, a full cache) then never pays for the engine start.
        **engine_kwargs: The engine arguments, declared once as the fields of :class:`~mteb_vllm.config.EngineConfig`
            (and the CLI's engine flags are made from the same declaration):

{engine_arguments}

            and any other ``vllm.EngineArgs`` field, passed through to vLLM (checked before the engine starts; a
            wrong name gets a "did you mean").
    """

    convert: str = "auto"
    mteb_model_meta: ModelMeta | None = None
    #: The backend stack (cache, the model's layers, the engine); None until it is built.
    backend: Backend | None = None
    _owns_backend = False

    def __init__(self, model: str | ModelMeta, revision: str | None = None, *, model_name: str | None = None,
                 backend: str | Backend | None = None, endpoints: list[str] | None = None, remote_options: Any = None,
                 lazy_start: bool = False, cache_dir: str | os.PathLike[str] | None = None, **engine_kwargs: Any):
        # imports and engine starts below set variables; those are put back (other threads' are left alone)
        with EnvironGuard():
            engine_args, passthrough = split_engine_kwargs(engine_kwargs)
            self._user_max_model_len = engine_args.get("max_model_len")
            self.resolved = resolve_model(model, revision, model_name=model_name,
                                          trust_remote_code=engine_args.pop("trust_remote_code", None))
            check_path_name(self.resolved.name, "model name")
            self.model_path = self.resolved.path
            self.registry_meta = self.resolved.registry
            config = EngineConfig(  # validated here: a wrong argument fails before anything slow happens
                model=self.resolved.path, revision=self.resolved.revision,
                trust_remote_code=self.resolved.trust_remote_code, convert=self.convert, engine_kwargs=passthrough,
                **engine_args)
            self._backend_spec = backend
            self._backend_options: dict[str, Any] = {"endpoints": list(endpoints) if endpoints else None,
                                                     "lazy": lazy_start, "options": remote_options}
            self.cache_dir = cache_dir
            self._set_up(config)

    def _set_up(self, config: EngineConfig) -> None:
        """The model's own checks and settings, then the backend and the meta, before any engine starts where it can
        (``lazy_start``)."""
        backend, endpoints = self._backend_spec, self._backend_options["endpoints"]
        if backend in (None, "local", "remote") or endpoints:
            from .checkpoint import engine_unsupported
            from .errors import UnsupportedModelError

            why = engine_unsupported(self.resolved.path, self.resolved.revision)
            if why:
                raise UnsupportedModelError(f"{self.resolved.name} cannot run on vLLM ({why}). Evaluate it with "
                                            f"mteb.get_model({self.resolved.name!r}) (sentence-transformers, the "
                                            "reference path)")
        self.config = config
        self._prepare()  # the subclass's own checks and registry lookups, before any engine starts
        self.config = dataclasses.replace(config, score_template=self._score_template(), **self._engine_settings())
        self._precision = PrecisionGuard(config.dtype, self.resolved.name)
        self.backend, self._owns_backend = self._build_backend(self.config)
        self.mteb_model_meta = self._make_meta()
        # what will compute the numbers, in one line (the CLI shows it with --verbose)
        logger.info("%s: %s", self.resolved.name, self.backend.info.describe())

    # --- hooks for the subclasses ------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Runs after the model is resolved and before the backend starts: fail here, not after a start."""

    def _score_template(self) -> Any:
        """An LLM reranker's score template for the backend (None for everything else)."""
        return None

    def _engine_settings(self) -> dict[str, Any]:
        """What the model's reference setup decides for the engine (context length, pooling, the modules run after
        it), as :class:`EngineConfig` fields; settled in ``_prepare``, before any engine starts."""
        return {}

    def _wrap_engine(self, backend: Backend) -> Backend:
        """The layers between the cache and the engine that the model needs (its sentence-transformers modules)."""
        return backend

    def _experiment_kwargs(self) -> dict[str, Any]:
        """Settings that change the scores, beyond the precision, recorded with the results so that a run with
        them is never resumed from (or filed with) a run without them. Only settings the user chose appear, so
        a run with the defaults keeps mteb's usual folder (``experiments/dtype_<precision>``)."""
        return {"max_model_len": self._user_max_model_len} if self._user_max_model_len else {}

    # --- backend and metadata ------------------------------------------------------------------------------
    def _build_backend(self, config: EngineConfig) -> tuple[Backend, bool]:
        """The backend, wrapped in the embedding/score cache when ``cache_dir`` is set. The wrapper owns the
        cache layer; the cache closes the inner backend only when the wrapper created it."""
        from .backends import create_backend

        backend, owned = create_backend(self._backend_spec, config, **self._backend_options)
        self._owns_engine = owned  # the engine itself, not the cache layer: only an own engine can be restarted
        try:
            backend = self._wrap_engine(backend)
        except BaseException:
            if owned:
                backend.close()
            raise
        if self.cache_dir is None:
            return backend, owned
        from .backends.cached import CachedBackend

        try:
            cached = CachedBackend(backend, self.cache_dir, config=config, close_inner=owned, name=self.resolved.name)
        except BaseException:
            if owned:
                backend.close()
            raise
        return cached, True

    def _make_meta(self) -> ModelMeta:
        """The registry's entry (or an empty one), naming what actually ran (:func:`~mteb_vllm.identity.results_meta`):
        the loaded revision and the precision, so results at different precisions are never filed together."""
        from .identity import results_meta, results_revision

        info, resolved = self.backend.info, self.resolved
        revision = results_revision(resolved.content_revision, info.revision, resolved.revision)
        return results_meta(resolved.name, resolved.registry, revision, info, self.dtype, self._experiment_kwargs())

    @property
    def engine(self) -> Backend:
        """The innermost backend: what computes (the vLLM engine, a fleet, a fake), under the cache and the model's
        own layers. Share it with ``backend=wrapper.engine``."""
        return self.backend.engine

    @property
    def dtype(self) -> str:
        """The precision the backend computes in (resolved, never "auto")."""
        return canonical(str(self.backend.dtype))

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the backend's engine now if it was created with ``lazy_start=True`` (idempotent)."""
        self.backend.start()
        self._refresh_meta()

    def _refresh_meta(self) -> None:
        """Bring ``mteb_model_meta`` up to date *in place*, after the precision was settled or changed.

        Why in place: ``mteb.evaluate`` reads the model's meta once, when it starts, and files every result of
        that call under the object it got. A new object would leave those results under the old precision's
        folder (``experiments/dtype_bfloat16`` for float32 scores).
        """
        fresh = self._make_meta()
        current = self.__dict__.get("mteb_model_meta")
        if current is None:
            self.mteb_model_meta = fresh
            return
        for name in type(fresh).model_fields:
            value = getattr(fresh, name)
            if getattr(current, name) != value:
                setattr(current, name, value)

    def close(self) -> None:
        """Stop the engine this wrapper started (a shared backend stays up). Safe to call twice."""
        if self.backend is not None and self._owns_backend:
            self.backend.close()

    cleanup = close  # the name mteb's own wrapper uses

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- shared checks ---------------------------------------------------------------------------------
    def _pool_checked(self, compute: Callable[[], np.ndarray], what: str, task: str | None = None) -> np.ndarray:
        """``compute()`` (a backend call) under the NaN/Inf policy (:class:`~mteb_vllm.precision.PrecisionGuard`):
        an overflowing half precision chosen by "auto" is replaced once by float32 on a new engine of this wrapper,
        and ``task``'s scores never mix two precisions."""
        return self._precision.checked(lambda: self._compute(compute), current=lambda: self.dtype,
                                       restart=self._fall_back_to_float32 if self._owns_engine else None,
                                       what=what, task=task)

    @property
    def precision_fallbacks(self) -> list[str]:
        """The precision fallbacks this wrapper made ("bfloat16->float32"); at most one."""
        return self._precision.fallbacks

    def _compute(self, compute: Callable[[], np.ndarray]) -> tuple[str, np.ndarray]:
        """(the precision the values were computed in, the values). A lazily started engine settles "auto"
        inside its first call; the meta then names what it settled on."""
        used = self.dtype
        values = compute()
        if unresolved(used):
            used = self.dtype
        if (self.mteb_model_meta.experiment_kwargs or {}).get("dtype") != self.dtype:
            self._refresh_meta()
        return used, values

    def _fall_back_to_float32(self, bad: int, what: str, previous: str) -> None:
        """The engine in float32 instead of the overflowing ``previous`` (the precision policy decided so)."""
        logger.warning("%s: %d %s contain NaN or Inf in %s (chosen by dtype='auto'); restarting the engine in "
                       "float32. Results from here on are computed in and filed under float32.",
                       self.mteb_model_meta.name, bad, what, previous)
        self.backend.close()
        self.config = dataclasses.replace(self.config, dtype="float32")
        self.backend, self._owns_backend = self._build_backend(self.config)
        self._refresh_meta()

    @staticmethod
    def _check_task_name(task_metadata: Any) -> None:
        # mteb writes results to {folder}/{model}/{revision}/{task name}.json: a task name is a file name
        check_path_name(getattr(task_metadata, "name", ""), "task name", slash=False)

    @staticmethod
    def _texts(inputs: Any, what: str = "input") -> list[str]:
        texts: list[Any] = []
        for batch in inputs:
            if not isinstance(batch, dict) or "text" not in batch:
                keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
                raise UnsupportedTaskError(
                    f"this wrapper evaluates text only; the task gives {keys} "
                    "(image/audio/video tasks need a multimodal model wrapper)"
                )
            texts.extend(batch["text"])
        return check_texts(texts, what)


if VllmWrapperBase.__doc__:  # the engine arguments' documentation, from their one declaration (EngineConfig)
    VllmWrapperBase.__doc__ = VllmWrapperBase.__doc__.replace("{engine_arguments}", engine_arguments_doc(" " * 12))
