"""Which precision an engine computes in when the user says ``dtype="auto"``.

Why not vLLM's own "auto": on a CPU it resolves a float32 checkpoint to float16, which x86 CPUs without
AVX512-FP16/AMX-FP16 emulate. Measured on this project's EPYC machine (issue 9): all-MiniLM-L6-v2 over three
STS test sets took 128.5 s with "auto" against 65.9 s for sentence-transformers in float32, 24.1 s for our
engine in float32 and 16.2 s in bfloat16, every variant within 1.4e-4 of the leaderboard scores. So "auto"
here means: the fastest precision the hardware computes natively, never an emulated one.

- CPU: bfloat16 where the CPU has native bf16 matmuls (AVX512-BF16 or AMX), otherwise float32.
- GPU, decided from device facts read without initialising CUDA (:mod:`mteb_vllm.gpu`), before any engine
  starts, so a run's results are looked up under the precision it will compute in (a ``--workers`` parent
  that never starts an engine included):

  - every GPU the engine uses has compute capability 8.0 or later (Ampere, Hopper, Blackwell): **bfloat16**;
  - otherwise (Volta, Turing: bfloat16 is not supported there and vLLM refuses it): **float16**, or
    **float32** for the model types vLLM refuses in float16 (Gemma 2/3, GLM-4: ``_FLOAT16_NOT_SUPPORTED_MODELS``);
  - no device facts at all (no NVML and the probe failed): vLLM's own choice, learnt when the engine starts.

  Why bfloat16 and not vLLM's float16 (which it prefers for pooling models) or the reference's float32:
  bfloat16 has float32's exponent range, so an activation that outgrows float16's 65,504 (LLM-based
  embedders do; vLLM refuses float16 for Gemma for that reason) cannot turn into Inf and NaN; its tensor-core
  rate is float16's; and it is the precision the CPU default already computes in, whose score shift is
  measured: on the three generated STS workloads of ``benchmarks/e2e_defaults.py`` (MiniLM, AMD EPYC,
  BENCHMARKS.md) bfloat16 moved the main scores by at most 5.1e-5 from the float32 reference, float16 (mteb's
  built-in wrapper) by 8.7e-6, both far inside ``mteb-vllm parity``'s 1e-3 tolerance. float16 keeps three
  more mantissa bits and would shift less; it is the fallback where bfloat16 is missing, and a NaN/Inf there
  reruns the task in float32. float32 for small encoders (exact, and cheap for a MiniLM on a GPU) was
  considered and not taken: it gives up the tensor cores for every model under the cut-off, to remove a
  shift that is already below the tolerance. ``benchmarks/precision_scores.py`` measured the same workloads
  per precision since (Intel Xeon with AMX, ``benchmarks/results/precision_scores.json``): at most 7.5e-8 from
  the float32 reference in float32, 5.1e-5 in bfloat16, 1.2e-5 in float16, and sentence-transformers itself
  cast to bfloat16 / float16 moves by 4.6e-5 / 1.2e-5: the shift is the precision's, not the engine's.
  Nothing here was run on a GPU.

An explicit dtype always wins; an explicit emulated one is allowed on CPU, with a warning that says what it
costs; an explicit bfloat16 on a GPU without it is refused before the start. The precision used is recorded
with the results (``experiment_kwargs["dtype"]``).

What happens after the start is decided here too: a half precision chosen by "auto" that overflows (NaN/Inf) is
replaced once by float32, and no task's scores mix two precisions (:class:`PrecisionGuard`, which the wrappers
call around every backend call); a precision vLLM chooses only when it starts (a GPU without device facts) is
"unresolved" until then (:func:`unresolved`), and a run starts such an engine before it looks results up
(:func:`settle`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import EngineArgumentError, NonFiniteOutputError, PrecisionChangedError

if TYPE_CHECKING:
    from .gpu import GpuDevice

logger = logging.getLogger(__name__)

#: Spellings vLLM accepts, mapped to one name each.
CANONICAL = {"half": "float16", "float": "float32", "float16": "float16", "bfloat16": "bfloat16",
             "float32": "float32", "auto": "auto"}
HALF_PRECISION = frozenset({"float16", "bfloat16"})

#: For each reduced-precision dtype: the torch probes of native CPU support, and what to say without it.
NATIVE_CPU_PROBES = {
    "bfloat16": (("_is_avx512_bf16_supported", "_is_amx_tile_supported"),
                 "this CPU has no native bfloat16 matmul (no AVX512-BF16 or AMX); it would be emulated"),
    "float16": (("_is_amx_fp16_supported", "_is_avx512_fp16_supported"),
                "this CPU has no native float16 matmul (no AVX512-FP16 or AMX-FP16); vLLM's CPU build runs it emulated"),
}


def canonical(dtype: str) -> str:
    return CANONICAL.get(dtype, dtype)


def cpu_emulation_reason(dtype: str) -> str | None:
    """None when ``dtype`` runs natively on this CPU, else why not (float32 is always native)."""
    dtype = canonical(dtype)
    if dtype in ("float32", "auto"):
        return None
    if dtype not in NATIVE_CPU_PROBES:
        return f"unknown dtype {dtype!r}"
    import torch

    probes, reason = NATIVE_CPU_PROBES[dtype]
    native = any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return None if native else reason


@dataclass(frozen=True)
class PrecisionChoice:
    """The dtype handed to the engine and why; ``automatic`` is True when the policy chose it."""

    dtype: str
    automatic: bool
    reason: str


#: Model types vLLM refuses in float16 (``vllm/config/model.py: _FLOAT16_NOT_SUPPORTED_MODELS``, 0.30-0.34).
FLOAT16_UNSUPPORTED_MODEL_TYPES = frozenset({"gemma2", "gemma3", "gemma3_text", "glm4"})


def gpu_precision(requested: str, devices: Sequence[GpuDevice] | None, *, model_type: str | None = None
                  ) -> PrecisionChoice:
    """The GPU rule of the module docstring, for the ``devices`` one engine uses (None: facts unavailable)."""
    requested = canonical(requested)
    if requested != "auto":
        if requested == "bfloat16" and devices:
            old = [d for d in devices if not d.native_bf16]
            if old:
                raise EngineArgumentError(
                    f"dtype=bfloat16 is not supported on {old[0].describe()} (it needs compute capability 8.0); "
                    "use dtype='float16' or 'float32', or leave dtype='auto'")
        return PrecisionChoice(requested, False, "requested")
    if not devices:
        return PrecisionChoice("auto", True, "GPU without device facts: vLLM's choice")
    if all(d.native_bf16 for d in devices):
        return PrecisionChoice("bfloat16", True, "GPU with native bfloat16 (compute capability 8.0 or later)")
    if model_type in FLOAT16_UNSUPPORTED_MODEL_TYPES:
        return PrecisionChoice("float32", True, f"GPU without bfloat16; vLLM refuses float16 for {model_type}")
    return PrecisionChoice("float16", True, "GPU without bfloat16 (compute capability below 8.0)")


def resolve_dtype(requested: str, *, on_cpu: bool, devices: Sequence[GpuDevice] | None = None,
                  model_type: str | None = None) -> PrecisionChoice:
    """The dtype to start the engine with (see the module docstring for the policy).

    On a GPU, ``devices`` are the GPUs the engine will use; None reads the visible ones (the first is the
    engine's with ``tensor_parallel_size=1``).
    """
    if not on_cpu:
        if devices is None:
            from .gpu import visible_gpus

            devices = visible_gpus().devices[:1]
        return gpu_precision(requested, devices, model_type=model_type)
    requested = canonical(requested)
    if requested != "auto":
        if why := cpu_emulation_reason(requested):
            logger.warning("dtype=%s: %s, which is several times slower than float32. Use dtype='auto' "
                           "(bfloat16 where native, else float32) or dtype='float32'.", requested, why)
        return PrecisionChoice(requested, False, "requested")
    if cpu_emulation_reason("bfloat16") is None:
        return PrecisionChoice("bfloat16", True, "CPU with native bfloat16")
    return PrecisionChoice("float32", True, "CPU without native bfloat16")


def engine_runs_on_cpu() -> bool:
    """Whether a local vLLM engine will run on the CPU, told without importing vLLM (which takes seconds) and
    without initialising CUDA (see :mod:`mteb_vllm.gpu`): no visible CUDA/ROCm GPU and no XPU. The local
    backend checks vLLM's own answer once it imports vLLM."""
    import torch

    from .gpu import cuda_build, visible_gpus

    if cuda_build():
        return not visible_gpus().devices
    xpu = getattr(torch, "xpu", None)
    return not (xpu is not None and xpu.is_available())


def engine_precision(requested: str, *, on_cpu: bool, model: str, revision: str | None,
                     tensor_parallel_size: int = 1) -> PrecisionChoice:
    """The precision an engine for ``model`` starts with, known before it starts: :func:`resolve_dtype` for the
    devices it will use (on a GPU the first ``tensor_parallel_size`` visible ones, read from NVML so CUDA is not
    initialised here) and, on a GPU, the model type (some are refused in float16)."""
    devices = None
    model_type = None
    if not on_cpu:
        from .checkpoint import config_json
        from .gpu import visible_gpus

        devices = visible_gpus().devices[:tensor_parallel_size]
        model_type = (config_json(model, revision) or {}).get("model_type")
    return resolve_dtype(requested, on_cpu=on_cpu, devices=devices, model_type=model_type)


# --- after the start ------------------------------------------------------------------------------------------
def unresolved(dtype: str) -> bool:
    """The engine has not decided its precision yet ("auto": a GPU engine without device facts, before it starts)."""
    return canonical(str(dtype)) == "auto"


def settle(wrapper: Any) -> None:
    """Start a wrapper whose precision is still unresolved (a lazily started GPU engine: vLLM picks float16 or
    bfloat16 by the device), so its results are looked up and filed under the precision it computes in.
    Without this, a lazy start inside the first task looked like a precision change: the task was evaluated
    twice and every result was filed under ``dtype_auto``, shared by runs on different GPUs."""
    if unresolved(wrapper.dtype):
        wrapper.start()


def non_finite_rows(values: Any) -> int:
    """How many rows of ``values`` hold a NaN or Inf."""
    import numpy as np

    if not values.size or np.isfinite(values).all():
        return 0
    return int((~np.isfinite(values)).reshape(values.shape[0], -1).any(axis=1).sum())


class PrecisionGuard:
    """The NaN/Inf policy of one wrapper, around each of its backend calls (:meth:`checked`).

    A half precision chosen by ``dtype="auto"`` that overflows is replaced, once, by float32 on a new engine of the
    wrapper (a warning says so; results from then on are filed under float32). No task's scores mix the two
    precisions. A call names the mteb task it belongs to (its subsets and splits share one result file): when
    earlier calls of that task returned half-precision vectors, :class:`~mteb_vllm.errors.PrecisionChangedError`
    stops the task, which must be evaluated again (it then runs in float32, as every later task does; the CLI's
    runner does this by itself); when this is the task's first call, or the call belongs to no task, it is
    computed again in float32. Otherwise, and if float32 also fails,
    :class:`~mteb_vllm.errors.NonFiniteOutputError` names the model, the dtype and what to try.

    Args:
        requested: The dtype the user asked for; only "auto" may fall back.
        name: The model's name, for messages.
    """

    def __init__(self, requested: str, name: str):
        self.requested = canonical(requested)
        self.name = name
        #: The fallbacks done so far ("bfloat16->float32"); at most one.
        self.fallbacks: list[str] = []
        self._lock = threading.Lock()  # two threads overflowing at once restart the engine once
        self._tasks: dict[str, str] = {}  # task name -> the precision its calls so far were computed in

    def checked(self, run: Callable[[], tuple[str, Any]], *, current: Callable[[], str],
                restart: Callable[[int, str, str], None] | None, what: str, task: str | None = None) -> Any:
        """``run()`` (a backend call: the precision it computed in, and its values), with the policy applied.

        ``current()`` is the precision the wrapper's engine computes in now (another thread may have changed it);
        ``restart(bad, what, used)`` replaces the engine by a float32 one, or is None when the wrapper cannot
        (it shares an engine it does not own). ``what`` names the values ("embeddings", "scores")."""
        used, values = run()
        bad = non_finite_rows(values)
        if bad and restart is not None:
            with self._lock:
                if used == current() and self._may_fall_back(used):
                    restart(bad, what, used)
                    self.fallbacks.append(f"{used}->float32")
        now = current()
        if used != now:  # the precision changed: this call overflowed, or another thread's did meanwhile
            if task is not None and self._tasks.get(task) == used:
                cause = f"{bad} {what} contain NaN or Inf" if bad else "another call overflowed"
                raise PrecisionChangedError(
                    f"{self.name}: the engine switched from {used} to {now} in the middle of task {task} ({cause} "
                    f"in {used}), after earlier calls of the task had returned {used} vectors. Its scores would mix "
                    f"two precisions, so the task was stopped: evaluate it again (it now runs in {now}, as every "
                    "later task does; mteb-vllm run does this by itself).", task=task, previous=used, current=now)
            used, values = run()
            bad = non_finite_rows(values)
        if bad:
            suggestion = "float32" if used in HALF_PRECISION else "bfloat16 or float32"
            raise NonFiniteOutputError(
                f"{self.name}: {bad} {what} contain NaN or Inf with dtype {used}. "
                + ("The model overflows even in float32: check the checkpoint's weights."
                   if used == "float32" and self.fallbacks else
                   f"This is usually an overflow of the dtype; rerun with dtype='{suggestion}'.")
            )
        if task is not None:
            self._tasks[task] = used
        return values

    def _may_fall_back(self, used: str) -> bool:
        return self.requested == "auto" and used in HALF_PRECISION and not self.fallbacks
