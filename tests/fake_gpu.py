"""A machine with NVIDIA GPUs, faked for tests on a machine without any.

- :class:`FakeNvml` answers the NVML calls :mod:`mteb_vllm.gpu` makes through ctypes (same argument kinds:
  ``byref`` out-parameters, string buffers), from a list of :class:`FakeGpu`; ``free`` can be changed between
  calls, as another engine's start would.
- :func:`install` puts it in place of ``libnvidia-ml``, makes torch look like a CUDA build, and replaces every
  ``torch.cuda`` function that would initialise CUDA with one that records the call in ``touched`` (and returns
  what a GPU machine would). ``torch.cuda.is_initialized`` is not recorded: it reads a flag and initialises
  nothing. A test asserts ``touched == []`` to prove CUDA was not initialised in its process.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

GIB = 2**30


@dataclass
class FakeGpu:
    name: str = "NVIDIA A100-SXM4-80GB"
    total: int = 80 * GIB
    free: int = 79 * GIB
    capability: tuple[int, int] = (8, 0)
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"


def _out(ref: Any) -> Any:
    return ref._obj  # the object a ctypes.byref() points at


def _put(buf: Any, size: Any, text: str) -> int:
    data = text.encode()
    if len(data) + 1 > int(getattr(size, "value", size)):
        return 7  # NVML_ERROR_INSUFFICIENT_SIZE
    buf.value = data
    return 0


@dataclass
class FakeNvml:
    """The NVML functions mteb_vllm.gpu calls, with NVML's return codes (0 = success)."""

    gpus: list[FakeGpu] = field(default_factory=lambda: [FakeGpu()])
    driver: str = "570.86.15"
    cuda_version: int = 12080
    initialised: int = 0

    def nvmlInit_v2(self) -> int:
        self.initialised += 1
        return 0

    def nvmlShutdown(self) -> int:
        self.initialised -= 1
        return 0

    def nvmlDeviceGetCount_v2(self, count: Any) -> int:
        _out(count).value = len(self.gpus)
        return 0

    def nvmlDeviceGetHandleByIndex_v2(self, index: Any, handle: Any) -> int:
        i = int(index.value)
        if not 0 <= i < len(self.gpus):
            return 2  # NVML_ERROR_INVALID_ARGUMENT
        _out(handle).value = i + 1  # a handle is an opaque non-null pointer
        return 0

    def _gpu(self, handle: Any) -> FakeGpu:
        return self.gpus[int(handle.value) - 1]

    def nvmlDeviceGetMemoryInfo(self, handle: Any, memory: Any) -> int:
        gpu, out = self._gpu(handle), _out(memory)
        out.total, out.free, out.used = gpu.total, gpu.free, gpu.total - gpu.free
        return 0

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any, major: Any, minor: Any) -> int:
        _out(major).value, _out(minor).value = self._gpu(handle).capability
        return 0

    def nvmlDeviceGetName(self, handle: Any, buf: Any, size: Any) -> int:
        return _put(buf, size, self._gpu(handle).name)

    def nvmlDeviceGetUUID(self, handle: Any, buf: Any, size: Any) -> int:
        return _put(buf, size, self._gpu(handle).uuid)

    def nvmlSystemGetDriverVersion(self, buf: Any, size: Any) -> int:
        return _put(buf, size, self.driver)

    def nvmlSystemGetCudaDriverVersion_v2(self, version: Any) -> int:
        _out(version).value = self.cuda_version
        return 0


class FakeCudaDriver:
    """libcuda as already loaded into a process: ``cuDeviceGetCount`` answers 3 (CUDA_ERROR_NOT_INITIALIZED)
    until something ran ``cuInit``."""

    def __init__(self, initialised: bool):
        self.initialised = initialised

    def cuDeviceGetCount(self, count: Any) -> int:
        if not self.initialised:
            return 3
        _out(count).value = 1
        return 0


#: torch.cuda functions that initialise CUDA (or the driver) when called; each fake records its name.
_INITIALISING = ("is_available", "device_count", "init", "_lazy_init", "current_device", "get_device_properties",
                 "get_device_capability", "get_device_name", "mem_get_info", "is_bf16_supported",
                 "get_rng_state_all", "set_rng_state_all", "synchronize", "set_device", "memory_allocated")


@dataclass
class FakeCudaMachine:
    nvml: FakeNvml
    touched: list[str] = field(default_factory=list)
    driver: FakeCudaDriver | None = None
    torch_initialised: bool = False


def install(monkeypatch: Any, gpus: list[FakeGpu] | None = None, *, driver_initialised: bool | None = None,
            torch_initialised: bool = False) -> FakeCudaMachine:
    """Make this process look like one on a GPU machine (see the module docstring).

    ``driver_initialised``: None means libcuda is not loaded here at all; False loaded but ``cuInit`` not run;
    True initialised (what ``torch.cuda.is_available()`` leaves behind).
    """
    import torch
    # transformers imports torch._dynamo lazily (AutoConfig -> masking_utils); imported under a torch that claims
    # CUDA but answers None, it fails half-way and stays broken for the session. Imported for real first.
    import torch._dynamo  # noqa: F401

    from mteb_vllm import gpu as gpu_module

    machine = FakeCudaMachine(nvml=FakeNvml(gpus=list(gpus) if gpus is not None else [FakeGpu()]),
                              torch_initialised=torch_initialised)
    if driver_initialised is not None:
        machine.driver = FakeCudaDriver(driver_initialised)
    monkeypatch.setattr(gpu_module, "_load_nvml", lambda: machine.nvml)
    monkeypatch.setattr(gpu_module, "_loaded_cuda_driver", lambda: machine.driver)
    monkeypatch.setattr(gpu_module, "_probe", _no_probe)
    monkeypatch.setattr(torch.cuda, "_is_compiled", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: machine.torch_initialised)

    def recorder(name: str):
        def call(*args: Any, **kwargs: Any) -> Any:
            machine.touched.append(name)
            machine.torch_initialised = True
            return {"is_available": True, "device_count": len(machine.nvml.gpus), "current_device": 0,
                    "is_bf16_supported": True, "get_rng_state_all": []}.get(name)
        return call

    for name in _INITIALISING:
        monkeypatch.setattr(torch.cuda, name, recorder(name), raising=False)
    monkeypatch.setattr(torch._C, "_cuda_getDeviceCount", recorder("_cuda_getDeviceCount"), raising=False)
    return machine


def _no_probe(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the device probe (a child process) must not run when NVML answers")


def nvml_struct_sizes_match() -> bool:
    """The memory struct mteb_vllm.gpu passes is NVML's nvmlMemory_t (three unsigned long long)."""
    from mteb_vllm.gpu import _NvmlMemory

    return ctypes.sizeof(_NvmlMemory) == 3 * ctypes.sizeof(ctypes.c_ulonglong)
