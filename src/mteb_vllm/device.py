"""Which hardware a local engine computes on, named well enough to keep numbers of different hardware apart.

Why: the same model, weights and precision give slightly different vectors on different hardware (another
GPU model, another CPU instruction set: oneDNN and vLLM's CPU kernels dispatch on AVX-512, AVX512-BF16 and
AMX). The embedding cache keeps one namespace per device class, so vectors computed on one machine are never
served as if another had computed them.

Nothing here initialises CUDA or imports torch or vLLM: a CPU is named from ``/proc/cpuinfo``, a GPU through
NVML (``pynvml``, which vLLM's CUDA builds install), else through vLLM's own platform object when vLLM is
already imported (it asks NVML or amdsmi, not the CUDA runtime).
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import sys

logger = logging.getLogger(__name__)

#: CPU features that decide which matmul kernels run (x86: oneDNN/vLLM dispatch; Arm: NEON/SVE, bf16).
CPU_KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
                    "amx_fp16", "asimd", "sve", "sve2", "bf16", "i8mm")


def device_class(on_cpu: bool) -> str:
    """``cpu <arch> <model> [<kernel flags>]`` or ``gpu <model>[, <model>...]`` for the devices this process's
    engine would use (``CUDA_VISIBLE_DEVICES`` respected)."""
    return cpu_class() if on_cpu else gpu_class()


@functools.lru_cache(maxsize=1)
def cpu_class() -> str:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model", "hardware") and not model:
                    model = " ".join(value.split())
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:  # not Linux
        pass
    model = model or platform.processor() or "unknown model"
    kernels = " ".join(f for f in CPU_KERNEL_FLAGS if f in flags)
    return f"cpu {platform.machine() or '?'} {model}" + (f" [{kernels}]" if kernels else "")


def gpu_class() -> str:
    names = _nvml_names() or _vllm_platform_names()
    if not names:
        logger.debug("could not name the GPU (no NVML, vLLM not imported)")
        return "gpu (model unknown)"
    return "gpu " + ", ".join(sorted(set(names)))


def _visible(count: int) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` entries (indices or UUIDs), or every index when it is unset."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(count)]
    return [v.strip() for v in env.split(",") if v.strip()]


def _nvml_names() -> list[str]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no NVIDIA driver
        return []
    try:
        names = []
        for ident in _visible(pynvml.nvmlDeviceGetCount()):
            if ident.isdigit():
                handle = pynvml.nvmlDeviceGetHandleByIndex(int(ident))
            else:
                handle = pynvml.nvmlDeviceGetHandleByUUID(ident)
            name = pynvml.nvmlDeviceGetName(handle)
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names
    except Exception:  # an entry NVML does not know (MIG names, a typo): name what can be named
        logger.debug("NVML could not name every visible device", exc_info=True)
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _vllm_platform_names() -> list[str]:
    if "vllm" not in sys.modules:  # importing vLLM takes seconds; only ask it when it is loaded anyway
        return []
    try:
        from vllm.platforms import current_platform

        name = current_platform.get_device_name(0)
    except Exception:
        return []
    return [str(name)] if name else []
