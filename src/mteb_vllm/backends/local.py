"""The in-process vLLM engine (``vllm.LLM``) as a :class:`~mteb_vllm.backends.base.Backend`."""

from __future__ import annotations

import atexit
import dataclasses
import gc
import logging
import os
import time
from typing import Any

import numpy as np

from ..config import EngineConfig
from ..errors import EngineStartError, ModelNotFoundError, missing_vllm_error
from .base import PoolingTask, TokenizedInput

logger = logging.getLogger(__name__)

#: Requests handed to vLLM per call. vLLM batches continuously inside a call; chunks only exist so the
#: progress bar can move and report tokens/s. Large enough that the drain at a chunk's end is noise.
CHUNK_SIZE = 4096


def _import_vllm():
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # The engine's worker processes must be spawned (forking a process that holds torch threads hangs).
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    try:
        import vllm
        from vllm.inputs import TokensPrompt
    except ImportError as exc:
        raise missing_vllm_error(exc) from exc
    return vllm, TokensPrompt


def _looks_like_path(model: str) -> bool:
    return model.startswith((os.sep, ".", "~")) or model.count("/") > 1 or os.path.exists(model)


def check_model_exists(model: str) -> str:
    """Expand a local path and fail fast when it does not exist (hub ids pass through)."""
    expanded = os.path.expanduser(model)
    if _looks_like_path(model) and not os.path.exists(expanded):
        raise ModelNotFoundError(
            f"model path {model!r} does not exist. Pass an existing local directory with config.json, "
            "or a Hugging Face model id such as 'sentence-transformers/all-MiniLM-L6-v2'."
        )
    return expanded if os.path.exists(expanded) else model


class LocalVllmBackend:
    """One ``vllm.LLM`` pooling engine in this process (its workers are child processes).

    Starting it costs tens of seconds on CPU, so wrappers share one instance where they can
    (``VllmEncoderWrapper(..., backend=other.backend)``).
    """

    def __init__(self, config: EngineConfig):
        vllm, self._TokensPrompt = _import_vllm()
        from ..hardware import (
            CPU_MAX_NUM_BATCHED_TOKENS,
            CPU_MAX_NUM_SEQS,
            CPU_MEMORY_FRACTION,
            configure_cpu_environment,
            is_cpu_platform,
        )

        config = dataclasses.replace(config, model=check_model_exists(config.model))
        config.check_engine_kwargs({f.name for f in dataclasses.fields(vllm.EngineArgs)})
        self.on_cpu = is_cpu_platform()
        if self.on_cpu:
            configure_cpu_environment()
            config = dataclasses.replace(
                config,
                gpu_memory_utilization=config.gpu_memory_utilization or CPU_MEMORY_FRACTION,
                # eager starts in ~half the time of torch.compile on CPU for the same throughput here
                enforce_eager=True if config.enforce_eager is None else config.enforce_eager,
                max_num_batched_tokens=config.max_num_batched_tokens or CPU_MAX_NUM_BATCHED_TOKENS,
                max_num_seqs=config.max_num_seqs or CPU_MAX_NUM_SEQS,
            )
        self.config = config
        self.model = config.model
        started = time.perf_counter()
        try:
            self._llm = vllm.LLM(**config.to_engine_args())
        except Exception as exc:  # vLLM raises many types; keep its message, add the fix
            raise self._explain_start_failure(exc) from exc
        self.start_seconds = time.perf_counter() - started
        model_config = self._llm.llm_engine.model_config
        self.max_model_len = int(model_config.max_model_len)
        self.dtype = str(model_config.dtype).replace("torch.", "")
        self._tokenizer = None
        atexit.register(self.close)
        logger.info("vLLM engine for %s ready in %.1f s (dtype %s, max_model_len %d)",
                    self.model, self.start_seconds, self.dtype, self.max_model_len)

    def _explain_start_failure(self, exc: Exception) -> Exception:
        text = f"{type(exc).__name__}: {exc}"
        low = text.lower()
        if any(s in low for s in ("repository not found", "does not appear to have", "offline", "couldn't connect",
                                  "cannot find the requested files", "not a local folder")):
            return ModelNotFoundError(
                f"could not load model {self.config.model!r}: {text}\n"
                "If it is a hub id, check the name and your network (HF_HUB_OFFLINE=1 forbids downloads); "
                "otherwise pass a local directory."
            )
        hint = ""
        if "memory" in low or "kv cache" in low:
            hint = " Lower gpu_memory_utilization (on CPU it is a fraction of RAM; 0.3-0.5 works) or max_model_len."
        elif "dtype" in low or "bfloat16" in low or "float16" in low:
            hint = " Try dtype='float32' on CPU or 'bfloat16' on GPU."
        return EngineStartError(f"vLLM failed to start for {self.config.model!r}: {text}.{hint}")

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            tok = self._llm.get_tokenizer()
            # vLLM wraps the HF tokenizer in a thread pool object; the wrappers want the plain one.
            self._tokenizer = getattr(tok, "tokenizer", tok)
        return self._tokenizer

    @property
    def llm(self):
        if self._llm is None:
            raise RuntimeError("this engine was closed; create a new wrapper")
        return self._llm

    def pool(self, inputs: list[TokenizedInput], task: PoolingTask, *, desc: str = "") -> np.ndarray:
        from tqdm.auto import tqdm

        prompts = []
        for item in inputs:
            prompt = self._TokensPrompt(prompt_token_ids=item.token_ids)
            if item.token_type_ids is not None:
                prompt["token_type_ids"] = item.token_type_ids
            prompts.append(prompt)
        rows: list[np.ndarray] = []
        total_tokens = 0
        started = time.perf_counter()
        show = bool(desc) and len(prompts) > 0 and not os.environ.get("MTEB_VLLM_NO_PROGRESS")
        with tqdm(total=len(prompts), desc=desc or "vllm", unit="text", disable=not show,
                  dynamic_ncols=True) as bar:
            for start in range(0, len(prompts), CHUNK_SIZE):
                chunk = prompts[start:start + CHUNK_SIZE]
                outputs = self.llm.encode(chunk, pooling_task=task, use_tqdm=False)
                for out in outputs:
                    data = out.outputs.data
                    rows.append(data.float().numpy() if hasattr(data, "numpy") else np.asarray(data, dtype=np.float32))
                total_tokens += sum(len(p["prompt_token_ids"]) for p in chunk)
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.update(len(chunk))
                bar.set_postfix(tok_s=f"{total_tokens / elapsed:,.0f}", refresh=False)
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([r.reshape(-1) for r in rows]).astype(np.float32, copy=False)

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is None:
            return
        atexit.unregister(self.close)
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # already gone
            logger.debug("engine core shutdown failed", exc_info=True)
        del llm
        gc.collect()
        try:
            from vllm.distributed import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception:
            logger.debug("vLLM cleanup failed", exc_info=True)
