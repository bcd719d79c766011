"""GPU facts read without initialising CUDA in this process, and the GPU engine defaults built on them.

Why not ``torch.cuda``: vLLM starts its engine core (and tensor-parallel workers) by forking this process
unless CUDA is already initialised here (vLLM 0.30-0.34, ``vllm/utils/system_utils.py: _maybe_force_spawn``
asks ``torch.cuda.is_initialized()``). ``torch.cuda.is_available()`` calls ``cudaGetDeviceCount``, which
initialises the CUDA driver and poisons fork (torch 2.13, the note on ``is_available``), yet leaves
``is_initialized()`` False: vLLM forks, and the child dies with "Cannot re-initialize CUDA in forked
subprocess". ``device_count()``, ``mem_get_info()`` and ``get_device_properties()`` either initialise too or
fall back to the same call when NVML fails. So the facts here come from NVML, the driver's management
library, which answers without a CUDA context: which devices ``CUDA_VISIBLE_DEVICES`` leaves visible, their
memory (total and free now), compute capability (bfloat16 needs 8.0), name, and the driver's CUDA version.
Where NVML cannot answer (no NVIDIA driver library, MIG devices, ROCm), a child process asks torch, so CUDA
is initialised there and never here.

What is built on the facts:

- :func:`multiprocessing_environment`: ``VLLM_WORKER_MULTIPROC_METHOD=spawn`` when the CUDA driver *was*
  initialised in this process (by the caller's own code, say), the one case vLLM's own check misses;
- :func:`plan_memory` / :func:`check_memory`: each engine's device memory sized from its model (weights, KV
  cache for two engine steps, activations, the CUDA runtime) instead of vLLM's default of nearly the whole
  device, so an encoder and a reranker, or parity's reference and ours, share one GPU; and a refusal with the
  numbers, before the start, when they cannot.

Nothing here was run on a GPU (this project has none); the NVML calls follow NVIDIA's NVML API reference and
are tested against a fake library (``tests/fake_gpu.py``).
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from .errors import EngineStartError, PreflightError

logger = logging.getLogger(__name__)

GIB = 2**30


# --- device facts ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuDevice:
    """One GPU this process may use, as NVML (or a probe process) reports it."""

    index: int  #: position among the visible devices (the CUDA ordinal this process would use)
    name: str
    total_bytes: int
    free_bytes: int
    capability: tuple[int, int]
    uuid: str = ""

    @property
    def native_bf16(self) -> bool:
        """bfloat16 matmuls in hardware: compute capability 8.0 (Ampere) and later; vLLM refuses bfloat16
        below it (``CudaPlatform.supported_dtypes``)."""
        return self.capability >= (8, 0)

    def describe(self) -> str:
        return (f"GPU {self.index} ({self.name}, compute capability {self.capability[0]}.{self.capability[1]}, "
                f"{self.free_bytes / GIB:.1f} of {self.total_bytes / GIB:.1f} GiB free)")


@dataclass(frozen=True)
class GpuFacts:
    """The visible GPUs and where the facts came from (``nvml``, ``probe`` or ``none``)."""

    devices: list[GpuDevice] = field(default_factory=list)
    source: str = "none"
    driver_version: str | None = None
    cuda_driver_version: str | None = None  #: the newest CUDA the driver supports, e.g. "12.8"
    note: str = ""


def cuda_build() -> bool:
    """Whether the installed torch was built with CUDA or ROCm (a CPU build has no GPU to look for).
    Reads build constants only: nothing is initialised."""
    import torch

    compiled = getattr(torch.cuda, "_is_compiled", None)
    if callable(compiled):
        return bool(compiled())
    return bool(getattr(torch.version, "cuda", None) or getattr(torch.version, "hip", None))


def _load_nvml() -> Any:
    """The NVML library, or None where there is none (no NVIDIA driver). Tests replace this."""
    try:
        return ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _nvml_string(call: Any, *args: Any, size: int = 96) -> str | None:
    buf = ctypes.create_string_buffer(size)
    if call(*args, buf, ctypes.c_uint(size)) != 0:
        return None
    return buf.value.decode("utf-8", "replace")


def _nvml_devices(lib: Any) -> tuple[list[dict[str, Any]], str | None, str | None] | None:
    """Every device NVML sees, in NVML's (PCI bus) order, with the driver versions; None when NVML fails."""
    if lib.nvmlInit_v2() != 0:
        return None
    try:
        count = ctypes.c_uint(0)
        if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return None
        devices = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(i), ctypes.byref(handle)) != 0:
                return None
            memory = _NvmlMemory()
            major, minor = ctypes.c_int(0), ctypes.c_int(0)
            if (lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0
                    or lib.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor)) != 0):
                return None
            devices.append({"name": _nvml_string(lib.nvmlDeviceGetName, handle) or "unknown GPU",
                            "uuid": _nvml_string(lib.nvmlDeviceGetUUID, handle) or "",
                            "total_bytes": int(memory.total), "free_bytes": int(memory.free),
                            "capability": (int(major.value), int(minor.value))})
        driver = _nvml_string(lib.nvmlSystemGetDriverVersion, size=80)
        cuda = ctypes.c_int(0)
        cuda_version = (f"{cuda.value // 1000}.{cuda.value % 1000 // 10}"
                        if lib.nvmlSystemGetCudaDriverVersion_v2(ctypes.byref(cuda)) == 0 and cuda.value else None)
        return devices, driver, cuda_version
    finally:
        lib.nvmlShutdown()


def visible_indices(value: str | None, uuids: list[str]) -> list[int] | None:
    """NVML indices of the devices ``CUDA_VISIBLE_DEVICES`` leaves visible, in CUDA's order, or None when that
    cannot be told from NVML (MIG instances).

    The CUDA runtime's rules, as torch's own NVML path applies them: unset means all; a comma-separated list
    of ordinals or (prefixes of) UUIDs; the list ends at the first entry that names no device; a device named
    twice leaves none visible. Ordinals are taken in NVML's (PCI bus) order, as vLLM's own NVML platform takes
    them; CUDA numbers the fastest GPU first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, which matters only on a
    machine with GPUs of different kinds, where vLLM asks for that setting too (``CudaPlatform.log_warnings``).
    """
    if value is None:
        return list(range(len(uuids)))
    picked: list[int] = []
    for raw in value.split(","):
        entry = raw.strip()
        if entry.startswith("MIG-"):
            return None
        if entry.lstrip("-").isdigit():
            index = int(entry)
            if not 0 <= index < len(uuids):
                break
        else:
            matches = [i for i, u in enumerate(uuids) if entry and u.startswith(entry)]
            if len(matches) != 1:
                break
            index = matches[0]
        if index in picked:
            return []
        picked.append(index)
    return picked


#: Run by :func:`_probe` in a child process: CUDA is initialised there, never in the caller.
_PROBE = """
import json, torch
out = []
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        out.append({"name": p.name, "uuid": str(getattr(p, "uuid", "")), "total_bytes": int(total),
                    "free_bytes": int(free), "capability": [p.major, p.minor]})
print(json.dumps({"devices": out, "cuda": torch.version.cuda or torch.version.hip}))
"""


def _probe(timeout: float = 120.0) -> GpuFacts:
    """Ask torch in a child process (where NVML cannot answer). Costs a torch import, about two seconds."""
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTORCH_NVML_BASED_CUDA_CHECK": "1"})
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return GpuFacts(source="none", note=f"the device probe failed ({type(exc).__name__})")
    devices = [GpuDevice(index=i, name=d["name"], total_bytes=d["total_bytes"], free_bytes=d["free_bytes"],
                         capability=(int(d["capability"][0]), int(d["capability"][1])), uuid=d.get("uuid", ""))
               for i, d in enumerate(data["devices"])]
    return GpuFacts(devices=devices, source="probe", cuda_driver_version=data.get("cuda"))


def visible_gpus() -> GpuFacts:
    """The GPUs this process may use, read without initialising CUDA here (see the module docstring).

    Not cached: free memory changes as engines start. A torch without CUDA answers at once with no devices.
    """
    if not cuda_build():
        return GpuFacts(source="none", note="torch is a CPU build")
    import torch

    lib = None if getattr(torch.version, "hip", None) else _load_nvml()
    read = _nvml_devices(lib) if lib is not None else None
    if read is not None:
        raw, driver, cuda_version = read
        order = visible_indices(os.environ.get("CUDA_VISIBLE_DEVICES"), [d["uuid"] for d in raw])
        if order is not None:
            devices = [GpuDevice(index=pos, **raw[i]) for pos, i in enumerate(order)]
            return GpuFacts(devices=devices, source="nvml", driver_version=driver, cuda_driver_version=cuda_version)
    key = os.environ.get("CUDA_VISIBLE_DEVICES")
    if key in _NO_DEVICES:  # a probe found none before: a machine does not grow GPUs while a process runs
        return _NO_DEVICES[key]
    facts = _probe()
    if not facts.devices:
        _NO_DEVICES[key] = facts
    return facts


#: Probe answers without devices, per CUDA_VISIBLE_DEVICES (so a CUDA build of torch on a machine without GPUs
#: pays for one probe, not one per engine start).
_NO_DEVICES: dict[str | None, GpuFacts] = {}


# --- how vLLM starts its processes -----------------------------------------------------------------------------
def _loaded_cuda_driver() -> Any:
    """libcuda if something in this process already loaded it, else None (it is never loaded here)."""
    try:
        return ctypes.CDLL("libcuda.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except (OSError, AttributeError):
        return None


def cuda_initialized_here() -> bool:
    """Whether CUDA was initialised in this process, asked without initialising it.

    ``torch.cuda.is_initialized()`` covers torch's own lazy init; the driver covers the rest
    (``torch.cuda.is_available()``, a library of the caller's): ``cuDeviceGetCount`` answers
    CUDA_ERROR_NOT_INITIALIZED (3) until ``cuInit`` ran, and 0 after.
    """
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "cuda", None) is not None:
        try:
            if torch.cuda.is_initialized():
                return True
        except Exception:  # a broken CUDA install answers in the driver check below
            pass
    lib = _loaded_cuda_driver()
    if lib is None:
        return False
    count = ctypes.c_int(0)
    return lib.cuDeviceGetCount(ctypes.byref(count)) == 0


def multiprocessing_environment() -> dict[str, str]:
    """``VLLM_WORKER_MULTIPROC_METHOD=spawn`` when CUDA was initialised in this process, so vLLM does not fork
    a child that cannot use CUDA; nothing otherwise (fork starts faster and needs no ``__main__`` guard), and
    nothing when the user set the variable."""
    if "VLLM_WORKER_MULTIPROC_METHOD" in os.environ or not cuda_initialized_here():
        return {}
    logger.info("CUDA was initialised in this process before the engine start: vLLM starts its processes "
                "with 'spawn' (a forked process could not use CUDA)")
    return {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}


# --- memory -------------------------------------------------------------------------------------------------
#: What a vLLM engine holds on its device besides weights, KV cache and activations: the CUDA context,
#: cuBLAS/cuDNN workspaces, CUDA graphs, the allocator's slack. An estimate from vLLM's and CUDA's documented
#: behaviour, not measured here (no GPU); ``gpu_memory_utilization`` set by the user replaces the whole plan.
GPU_RUNTIME_BYTES = GIB
#: Token budget assumed when the user sets none: vLLM's largest offline default (16384 tokens on GPUs with
#: 70 GiB or more; 8192 below), raised to the context length for pooling models as vLLM does.
GPU_DEFAULT_BATCHED_TOKENS = 16384
#: Hidden-size activation buffers alive at once in a layer (residual, norm output, q, k, v, attention output,
#: projection output, slack) per batched token.
ACTIVATION_BUFFERS = 8


@dataclass(frozen=True)
class MemoryPlan:
    """Device memory one engine needs on each of its GPUs, by part (bytes)."""

    weights: int
    kv_cache: int
    activations: int
    runtime: int = GPU_RUNTIME_BYTES

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.runtime

    def fraction(self, device_total: int) -> float:
        """``gpu_memory_utilization`` for this plan on a device of ``device_total`` bytes (rounded up)."""
        return min(1.0, math.ceil(self.total / device_total * 100) / 100)

    def describe(self) -> str:
        return (f"about {self.total / GIB:.1f} GiB (weights {self.weights / GIB:.2f}, KV cache "
                f"{self.kv_cache / GIB:.2f}, activations {self.activations / GIB:.2f}, CUDA runtime "
                f"{self.runtime / GIB:.2f} GiB)")


def _width(dtype: str) -> int:
    return 4 if dtype in ("float32", "float") else 2  # "auto" on a GPU is a half precision


def _safetensors_parameters(folder: str) -> int | None:
    """Parameter count from the headers of a local folder's ``*.safetensors`` files (None without them)."""
    import glob
    import struct

    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        return None
    total = 0
    try:
        for path in files:
            with open(path, "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
            for name, entry in header.items():
                if name != "__metadata__":
                    total += math.prod(entry["shape"])
    except (OSError, ValueError, KeyError, struct.error):
        return None
    return total


def parameter_count(model: str, *, trust_remote_code: bool = False, revision: str | None = None) -> int | None:
    """The model's parameters: exact from a local folder's safetensors headers, else estimated from its
    config (the transformer blocks plus the token embeddings)."""
    from .checkpoint import hf_text_config, is_local_path, model_shape

    if is_local_path(model):
        exact = _safetensors_parameters(os.path.expanduser(model))
        if exact is not None:
            return exact
    shape = model_shape(model, trust_remote_code, revision)
    if shape is None:
        return None
    config = hf_text_config(model, trust_remote_code, revision)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    return shape.params_per_token + vocab * shape.hidden


def plan_memory(model: str, *, dtype: str, max_model_len: int | None, max_num_batched_tokens: int | None,
                tensor_parallel_size: int = 1, trust_remote_code: bool = False,
                revision: str | None = None) -> MemoryPlan | None:
    """What one engine for ``model`` needs on each of its GPUs; None for a model whose shape is unknown.

    KV cache: as on CPU (:func:`mteb_vllm.cpu_defaults.kv_cache_bytes`), two full engine steps and at least one
    max-length sequence: a pooling request lives for a single step, so more cache only idles.
    """
    from .cpu_defaults import kv_cache_bytes
    from .checkpoint import context_length, model_shape

    shape = model_shape(model, trust_remote_code, revision)
    params = parameter_count(model, trust_remote_code=trust_remote_code, revision=revision)
    if shape is None or params is None:
        return None
    width = _width(dtype)
    context = context_length(model, revision, trust_remote_code=trust_remote_code, requested=max_model_len) or 8192
    batched = max_num_batched_tokens or max(GPU_DEFAULT_BATCHED_TOKENS, context)
    tp = max(1, tensor_parallel_size)
    kv = kv_cache_bytes(shape, dtype, context=context, batched_tokens=batched)
    per_token = shape.hidden * ACTIVATION_BUFFERS + shape.intermediate * (3 if shape.gated_mlp else 2)
    activations = batched * per_token * width // tp
    return MemoryPlan(weights=params * width // tp, kv_cache=kv // tp, activations=activations)


class GpuMemoryError(PreflightError, EngineStartError):
    """An engine cannot fit on its GPU(s); the message has the numbers and what to do. An engine start error
    too: a run stops at it instead of failing every remaining task the same way."""


def check_memory(devices: list[GpuDevice], *, model: str, plan: MemoryPlan | None,
                 gpu_memory_utilization: float | None) -> None:
    """Refuse, before vLLM starts, an engine whose memory is not free on every device it will use.

    vLLM itself checks ``free >= gpu_memory_utilization * total`` on each device only after its start-up
    (seconds to minutes in); the same check here says which model, how much, and what to change.
    """
    for device in devices:
        if gpu_memory_utilization is not None:
            wanted = math.ceil(gpu_memory_utilization * device.total_bytes)
            what = f"gpu_memory_utilization={gpu_memory_utilization:g} asks for {wanted / GIB:.1f} GiB"
            fix = ("Lower it, or leave it unset so mteb-vllm sizes the engine from the model"
                   + (f" ({plan.describe()})" if plan is not None else ""))
        elif plan is not None:
            wanted = plan.total
            what = f"{model} needs {plan.describe()}"
            fix = ("Close another engine or process on it, pick a freer GPU (CUDA_VISIBLE_DEVICES), or lower "
                   "max_num_batched_tokens / max_model_len")
        else:
            return
        if wanted > device.free_bytes:
            raise GpuMemoryError(f"{what} on {device.describe()}: {wanted / GIB:.1f} GiB are not free. {fix}.")


def engine_memory_arguments(model: str, devices: list[GpuDevice], *, dtype: str, max_model_len: int | None,
                            max_num_batched_tokens: int | None, tensor_parallel_size: int,
                            gpu_memory_utilization: float | None, kv_cache_memory_bytes: int | None,
                            trust_remote_code: bool = False, revision: str | None = None) -> dict[str, Any]:
    """``gpu_memory_utilization`` and ``kv_cache_memory_bytes`` for a GPU engine, checked against free memory.

    Only what the user left unset is filled: an explicit ``gpu_memory_utilization`` (or ``kv_cache_memory_bytes``
    in the engine arguments) keeps vLLM's own sizing and is only checked. Why both numbers: with
    ``kv_cache_memory_bytes`` vLLM allocates exactly that KV cache and skips its profile-based sizing (vLLM
    0.30-0.34, ``Worker.determine_available_memory``), but still refuses to start unless
    ``gpu_memory_utilization`` x device memory is free (``request_memory``), and its default of 0.92 (1.0 with
    0.34's extensible KV cache) is never free next to another engine.
    """
    used = devices[:max(1, tensor_parallel_size)]
    plan = plan_memory(model, dtype=dtype, max_model_len=max_model_len, max_num_batched_tokens=max_num_batched_tokens,
                       tensor_parallel_size=tensor_parallel_size, trust_remote_code=trust_remote_code,
                       revision=revision)
    if gpu_memory_utilization is not None or kv_cache_memory_bytes is not None:
        check_memory(used, model=model, plan=plan, gpu_memory_utilization=gpu_memory_utilization)
        return {}
    if plan is None or not used:
        logger.info("%s: device memory left to vLLM's default (model shape or devices unknown); set "
                    "gpu_memory_utilization to share a GPU with another engine", model)
        return {}
    check_memory(used, model=model, plan=plan, gpu_memory_utilization=None)
    fraction = max(plan.fraction(d.total_bytes) for d in used)
    logger.info("%s: %s per GPU, gpu_memory_utilization %.2f", model, plan.describe(), fraction)
    return {"gpu_memory_utilization": fraction, "kv_cache_memory_bytes": plan.kv_cache}
