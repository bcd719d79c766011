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
from ..gc_pause import paused_gc
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


#: The user's own choice, read once before we start touching the variable for each engine.
_USER_MULTIPROCESSING = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")

#: Modules whose objects break vLLM's in-process kernel registration (it scans every loaded module;
#: llvmlite's ffi wrappers answer ``vars()`` with a non-dict). bm25s loads them through numba.
_IN_PROCESS_HAZARDS = ("llvmlite.binding.ffi",)


def _choose_in_process(config: EngineConfig) -> bool:
    """Run the single CPU worker inside this process instead of behind two process hops.

    Measured on this project's 2-core machine with MiniLM: engine start 30 s -> 10 s and 2000 texts
    45 s -> 34 s. Only for one worker (tensor_parallel_size 1), only when the user did not choose
    (VLLM_ENABLE_V1_MULTIPROCESSING or distributed_executor_backend), and not when a module known to
    break vLLM's in-process start is loaded.
    """
    import sys

    if config.tensor_parallel_size != 1 or _USER_MULTIPROCESSING is not None:
        return False
    if config.engine_kwargs.get("distributed_executor_backend") not in (None, "uni"):
        return False
    hazards = [m for m in _IN_PROCESS_HAZARDS if m in sys.modules]
    if hazards:
        logger.info("starting vLLM in worker processes (in-process start is unsafe with %s loaded)", hazards)
        return False
    return True


def _set_multiprocessing(enabled: bool) -> None:
    """Point vLLM at in-process or multiprocess mode for the next engine (vLLM caches its env reads)."""
    if _USER_MULTIPROCESSING is not None:
        return
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if enabled else "0"
    try:
        from vllm import envs

        envs.disable_envs_cache()
    except (ImportError, AttributeError):  # older vLLM: no cache to clear
        pass


def _release_without_teardown(client: Any) -> None:
    """Free an in-process engine's model and scheduler but keep the distributed state others use.

    The in-process client shuts its engine core down from a finalizer, which would run the full teardown
    when the object is collected; it is detached first.
    """
    finalizer = getattr(client, "_finalizer", None)
    if finalizer is not None:
        finalizer.detach()
    core = getattr(client, "engine_core", None)
    if core is None:
        return
    if getattr(core, "model_executor", None) is not None:
        core.model_executor.shutdown()
    if getattr(core, "scheduler", None) is not None:
        core.scheduler.shutdown()


class LocalVllmBackend:
    """One ``vllm.LLM`` pooling engine in this process (its workers are child processes).

    Starting it costs tens of seconds on CPU, so wrappers share one instance where they can
    (``VllmEncoderWrapper(..., backend=other.backend)``).
    """

    #: Engines alive in this process. In-process engines share vLLM's global distributed state, which
    #: may only be torn down when the last of them closes.
    _live = 0

    def __init__(self, config: EngineConfig):
        with paused_gc():
            self._start(config)

    def _start(self, config: EngineConfig) -> None:
        vllm, self._TokensPrompt = _import_vllm()
        from ..hardware import (
            CPU_BLOCK_SIZE,
            CPU_MAX_NUM_SEQS,
            CPU_MEMORY_FRACTION,
            configure_cpu_environment,
            cpu_batched_tokens,
            cpu_kv_cache_bytes,
            is_cpu_platform,
            tune_cpu_allocator,
        )

        config = dataclasses.replace(config, model=check_model_exists(config.model))
        config.check_engine_kwargs({f.name for f in dataclasses.fields(vllm.EngineArgs)})
        self.on_cpu = is_cpu_platform()
        self.in_process = False
        if self.on_cpu:
            configure_cpu_environment()
            tune_cpu_allocator()
            engine_kwargs = dict(config.engine_kwargs)
            engine_kwargs.setdefault("block_size", CPU_BLOCK_SIZE)
            self.in_process = _choose_in_process(config)
            if self.in_process:
                engine_kwargs.setdefault("distributed_executor_backend", "uni")
            batched = config.max_num_batched_tokens or cpu_batched_tokens(
                config.model, trust_remote_code=config.trust_remote_code, max_model_len=config.max_model_len)
            if config.gpu_memory_utilization is None and "kv_cache_memory_bytes" not in engine_kwargs:
                engine_kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(
                    config.model, trust_remote_code=config.trust_remote_code, max_model_len=config.max_model_len,
                    max_num_batched_tokens=batched, dtype=config.dtype)
            config = dataclasses.replace(
                config,
                engine_kwargs=engine_kwargs,
                gpu_memory_utilization=config.gpu_memory_utilization or CPU_MEMORY_FRACTION,
                # eager starts in ~half the time of torch.compile on CPU for the same throughput here
                enforce_eager=True if config.enforce_eager is None else config.enforce_eager,
                max_num_batched_tokens=batched,
                max_num_seqs=config.max_num_seqs or CPU_MAX_NUM_SEQS,
            )
        self.config = config
        self.model = config.model
        started = time.perf_counter()
        _set_multiprocessing(not self.in_process)
        # vLLM calls gc.collect() several times while starting and gc.freeze() at its end. Freezing first
        # gives the same end state, but those collections no longer walk the caller's whole heap (mteb,
        # torch, transformers): 1.5 s of a 9 s start in a profile here.
        gc.freeze()
        try:
            self._llm = vllm.LLM(**config.to_engine_args())
        except Exception as exc:  # vLLM raises many types; keep its message, add the fix
            raise self._explain_start_failure(exc) from exc
        self.start_seconds = time.perf_counter() - started
        LocalVllmBackend._live += 1
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

        prompts = [self._TokensPrompt(prompt_token_ids=item.token_ids) for item in inputs]
        params = self._pooling_params(inputs)
        rows: list[np.ndarray] = []
        total_tokens = 0
        started = time.perf_counter()
        show = bool(desc) and len(prompts) > 0 and not os.environ.get("MTEB_VLLM_NO_PROGRESS")
        with tqdm(total=len(prompts), desc=desc or "vllm", unit="text", disable=not show,
                  dynamic_ncols=True) as bar:
            for start in range(0, len(prompts), CHUNK_SIZE):
                chunk = prompts[start:start + CHUNK_SIZE]
                chunk_params = params[start:start + CHUNK_SIZE] if params is not None else None
                outputs = self.llm.encode(chunk, chunk_params, pooling_task=task, use_tqdm=False)
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

    @staticmethod
    def _pooling_params(inputs: list[TokenizedInput]):
        """Per-request params carrying BERT segment ids, or None when no input has a second segment.

        vLLM does not read ``token_type_ids`` from a tokens prompt; its scoring path passes them to the
        model as the position of the first type-1 token (``compressed_token_type_ids``), which is exact for
        pair inputs (zeros, then ones). Without them a BERT cross-encoder scores every pair as one segment.
        """
        firsts = []
        for item in inputs:
            types = item.token_type_ids
            firsts.append(next((i for i, t in enumerate(types) if t), None) if types else None)
        if all(f is None for f in firsts):
            return None
        from vllm import PoolingParams

        params = []
        for first in firsts:
            p = PoolingParams()
            if first is not None:
                p.extra_kwargs = {"compressed_token_type_ids": first}
            params.append(p)
        return params

    def close(self) -> None:
        """Stop the engine and release its memory. Safe to call twice.

        vLLM's engine shutdown also tears down the process-wide distributed state. For an in-process
        engine that state is shared with every other in-process engine still running here, so while
        others are alive this engine is only dereferenced (its memory goes with the garbage collector);
        the last one to close does the full shutdown.
        """
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is None:
            return
        atexit.unregister(self.close)
        LocalVllmBackend._live -= 1
        others_share_state = self.in_process and LocalVllmBackend._live > 0
        try:
            if others_share_state:
                _release_without_teardown(llm.llm_engine.engine_core)
            else:
                llm.llm_engine.engine_core.shutdown()
        except Exception:  # already gone
            logger.debug("engine core shutdown failed", exc_info=True)
        del llm
        gc.unfreeze()  # vLLM freezes the objects alive at start; without this they would never be freed
        gc.collect()
        if LocalVllmBackend._live > 0:
            return
        try:
            from vllm.distributed import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception:
            logger.debug("vLLM cleanup failed", exc_info=True)
