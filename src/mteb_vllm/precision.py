"""Which precision an engine computes in when the user says ``dtype="auto"``.

Why not vLLM's own "auto": on a CPU it resolves a float32 checkpoint to float16, which x86 CPUs without
AVX512-FP16/AMX-FP16 emulate. Measured on this project's EPYC machine (issue 9): all-MiniLM-L6-v2 over three
STS test sets took 128.5 s with "auto" against 65.9 s for sentence-transformers in float32, 24.1 s for our
engine in float32 and 16.2 s in bfloat16, every variant within 1.4e-4 of the leaderboard scores. So "auto"
here means: the fastest precision the hardware computes natively, never an emulated one.

- CPU: bfloat16 where the CPU has native bf16 matmuls (AVX512-BF16 or AMX), otherwise float32.
- GPU: vLLM's own choice (its "auto" picks a native half precision there).

An explicit dtype always wins; an explicit emulated one is allowed, with a warning that says what it costs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


def resolve_dtype(requested: str, *, on_cpu: bool) -> PrecisionChoice:
    """The dtype to start the engine with (see the module docstring for the policy)."""
    requested = canonical(requested)
    if requested != "auto":
        if on_cpu and (why := cpu_emulation_reason(requested)):
            logger.warning("dtype=%s: %s, which is several times slower than float32. Use dtype='auto' "
                           "(bfloat16 where native, else float32) or dtype='float32'.", requested, why)
        return PrecisionChoice(requested, False, "requested")
    if not on_cpu:
        return PrecisionChoice("auto", True, "GPU: vLLM's choice")
    if cpu_emulation_reason("bfloat16") is None:
        return PrecisionChoice("bfloat16", True, "CPU with native bfloat16")
    return PrecisionChoice("float32", True, "CPU without native bfloat16")


def engine_runs_on_cpu() -> bool:
    """Whether a local vLLM engine will run on the CPU, told without importing vLLM (which takes seconds):
    no CUDA/ROCm or XPU device visible to torch. The local backend checks vLLM's own answer once it starts."""
    import torch

    if torch.cuda.is_available():
        return False
    xpu = getattr(torch, "xpu", None)
    return not (xpu is not None and xpu.is_available())
