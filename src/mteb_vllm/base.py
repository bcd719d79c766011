"""``VllmWrapperBase``: one model, one engine, the mteb metadata that names the results."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import EngineConfig
from .errors import EngineArgumentError, NonFiniteOutputError

if TYPE_CHECKING:
    from mteb.models import ModelMeta

    from .backends.base import Backend

logger = logging.getLogger(__name__)


class VllmWrapperBase:
    """Owns one vLLM pooling engine for ``model`` and the ``ModelMeta`` mteb files results under.

    Args:
        model: Hugging Face id, local directory, or an mteb ``ModelMeta`` (its name and revision are used).
        revision: Model revision (ignored with a ``ModelMeta``, which carries its own).
        trust_remote_code: Allow custom modelling code from the model repository.
        dtype: Weight/activation dtype; "auto" is the checkpoint's dtype (float32 on CPU for fp16 models).
        head_dtype: dtype of the pooling/classifier head ("model" keeps the model dtype).
        max_model_len: Context length; inputs longer than it are truncated (and counted).
        max_num_batched_tokens, max_num_seqs: Engine step budget (CPU defaults: 4096 tokens or the context length if longer, 256 sequences).
        tensor_parallel_size: GPUs to shard the model over.
        enable_prefix_caching: Reuse KV cache of shared prefixes (helps long instruction prompts).
        gpu_memory_utilization: Fraction of device memory (on CPU, of RAM; default 0.4 there).
        hf_overrides: Overrides of the Hugging Face config (e.g. for LLM rerankers).
        pooler_config: vLLM ``PoolerConfig`` (pooling type, normalization).
        enforce_eager: Skip torch.compile / CUDA graphs (default on CPU: True, it halves start time).
        model_name: The name mteb knows the model by, when ``model`` is a local path; used for registry
            prompts and as the results folder name.
        backend: An already running backend to reuse (engines are expensive); engine args are then ignored.
        **engine_kwargs: Any other ``vllm.EngineArgs`` field, checked before the engine starts.
    """

    convert: str = "auto"
    mteb_model_meta: ModelMeta | None = None

    def __init__(  # noqa: PLR0913
        self,
        model: str | ModelMeta,
        revision: str | None = None,
        *,
        trust_remote_code: bool = True,
        dtype: str = "auto",
        head_dtype: str | None = None,
        max_model_len: int | None = None,
        max_num_batched_tokens: int | None = None,
        max_num_seqs: int | None = None,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool | None = None,
        gpu_memory_utilization: float | None = None,
        hf_overrides: dict[str, Any] | None = None,
        pooler_config: Any = None,
        enforce_eager: bool | None = None,
        model_name: str | None = None,
        backend: Backend | None = None,
        **engine_kwargs: Any,
    ):
        from mteb.models import ModelMeta

        from .prompts import registry_meta

        if isinstance(model, ModelMeta):
            registry = model
            revision = model.revision
            model_path = model.name
        elif isinstance(model, str):
            model_path = model
            registry = registry_meta(model_name or model)
        else:
            raise EngineArgumentError(f"model must be a model name, a path or an mteb ModelMeta, got {type(model).__name__}")
        if model_name is not None and registry is None:
            logger.info("%s is not in mteb's registry; results are saved under that name", model_name)
        self.model_path = model_path
        self.registry_meta = registry
        self.config = EngineConfig(
            model=model_path, revision=revision, trust_remote_code=trust_remote_code, dtype=dtype,
            head_dtype=head_dtype, max_model_len=max_model_len, max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=max_num_seqs, tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching, gpu_memory_utilization=gpu_memory_utilization,
            hf_overrides=hf_overrides, pooler_config=pooler_config, enforce_eager=enforce_eager,
            convert=self.convert, engine_kwargs=dict(engine_kwargs),
        )
        self.mteb_model_meta = self._make_meta(registry, model_name or model_path, revision)
        if backend is None:
            from .backends.local import LocalVllmBackend

            backend = LocalVllmBackend(self.config)
            self._owns_backend = True
        else:
            self._owns_backend = False
        self.backend: Backend = backend

    @staticmethod
    def _make_meta(registry: ModelMeta | None, name: str, revision: str | None) -> ModelMeta:
        from mteb.models import ModelMeta

        if registry is not None:
            return registry.model_copy(deep=True)
        return ModelMeta.create_empty(overwrites=dict(name=name, revision=revision or "no_revision_available"))

    # --- lifecycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the engine this wrapper started (a shared backend stays up). Safe to call twice."""
        backend = getattr(self, "backend", None)
        if backend is not None and getattr(self, "_owns_backend", False):
            backend.close()

    cleanup = close  # the name mteb's own wrapper uses

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- shared checks ---------------------------------------------------------------------------------
    def _check_finite(self, values: np.ndarray, what: str) -> None:
        if values.size and not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).reshape(values.shape[0], -1).any(axis=1).sum())
            dtype = getattr(self.backend, "dtype", self.config.dtype)
            suggestion = "float32" if dtype in ("float16", "half", "bfloat16") else "bfloat16 or float32"
            raise NonFiniteOutputError(
                f"{self.mteb_model_meta.name}: {bad} {what} contain NaN or Inf with dtype {dtype}. "
                f"This is usually an overflow of the dtype; rerun with dtype='{suggestion}'."
            )

    @staticmethod
    def _texts(inputs: Any) -> list[str]:
        from .errors import UnsupportedTaskError

        texts: list[str] = []
        for batch in inputs:
            if "text" not in batch:
                raise UnsupportedTaskError(
                    f"this wrapper evaluates text only; the task gives {sorted(batch)} "
                    "(image/audio/video tasks need a multimodal model wrapper)"
                )
            texts.extend(batch["text"])
        return texts
