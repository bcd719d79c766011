"""The GPU path on a machine without a GPU: device facts from a fake NVML, CUDA calls recorded by a fake
torch.cuda, and a fake vLLM built from a recorded release (tests/fake_gpu.py, tests/fake_vllm.py).

What these prove: no CUDA initialisation in the engine's process before vLLM starts (so vLLM's fork of its
engine processes works), spawn when the caller did initialise CUDA, engines sized from their model so two share
one device, and a refusal with the numbers before the start when they cannot.
"""

from __future__ import annotations

import shutil

import pytest

import fake_gpu
import fake_vllm
from mteb_vllm import gpu
from mteb_vllm.backends.local import LocalVllmBackend
from mteb_vllm.config import EngineConfig

GIB = 2**30
NEWEST = fake_vllm.versions()[-1]


class _NoReaper:
    """The reaper's sidecar is not the subject here; its folder is removed as the real one does."""

    def __init__(self, ipc_dir=None, **kwargs):
        self.ipc_dir = ipc_dir

    def watch(self, pids, files=None):
        pass

    def release(self):
        if self.ipc_dir:
            shutil.rmtree(self.ipc_dir, ignore_errors=True)


@pytest.fixture
def gpu_machine(monkeypatch):
    """Install a fake GPU machine and a fake vLLM (the newest recorded release); returns a starter."""
    monkeypatch.setattr("mteb_vllm.backends.local.Reaper", _NoReaper)
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def make(gpus=None, *, version=NEWEST, **kwargs):
        machine = fake_gpu.install(monkeypatch, gpus, **kwargs)
        fake_vllm.install(monkeypatch, version)
        return machine

    return make


def _start(model, **config):
    backend = LocalVllmBackend(EngineConfig(model=model, **config), lazy=True)
    backend.start()
    return backend


def test_cuda_visible_devices_is_read_as_the_cuda_runtime_reads_it():
    uuids = ["GPU-aaaa-1", "GPU-bbbb-2", "GPU-cccc-3"]
    assert gpu.visible_indices(None, uuids) == [0, 1, 2]
    assert gpu.visible_indices("2,0", uuids) == [2, 0]
    assert gpu.visible_indices("GPU-bbbb", uuids) == [1]  # a unique UUID prefix
    assert gpu.visible_indices("1,7,0", uuids) == [1]  # the list ends at the first entry naming no device
    assert gpu.visible_indices("1,-1,0", uuids) == [1]
    assert gpu.visible_indices("0,0", uuids) == []  # a device named twice leaves none
    assert gpu.visible_indices("", uuids) == []
    assert gpu.visible_indices("MIG-1234", uuids) is None  # NVML cannot map MIG instances: ask torch in a child


def test_device_facts_come_from_nvml_without_touching_cuda(gpu_machine, monkeypatch):
    machine = gpu_machine([fake_gpu.FakeGpu(name="Tesla T4", total=16 * GIB, free=15 * GIB, capability=(7, 5),
                                            uuid="GPU-t4"),
                           fake_gpu.FakeGpu(uuid="GPU-a100")])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    facts = gpu.visible_gpus()
    assert facts.source == "nvml" and (facts.driver_version, facts.cuda_driver_version) == ("570.86.15", "12.8")
    assert [(d.index, d.name, d.capability, d.native_bf16) for d in facts.devices] == [
        (0, "NVIDIA A100-SXM4-80GB", (8, 0), True), (1, "Tesla T4", (7, 5), False)]
    assert facts.devices[1].free_bytes == 15 * GIB
    assert machine.touched == [] and machine.nvml.initialised == 0  # every nvmlInit has its nvmlShutdown
    assert fake_gpu.nvml_struct_sizes_match()


def test_the_engines_process_never_initialises_cuda_before_vllm_starts(gpu_machine, minilm_path):
    """Everything mteb-vllm does in the engine's process up to ``vllm.LLM(...)`` (device detection, precision,
    memory sizing, the caller's state snapshot) leaves CUDA alone, so vLLM may fork. Before the fix,
    ``torch.cuda.is_available()`` ran in precision.py and process_state.py."""
    machine = gpu_machine()
    backend = _start(minilm_path)
    try:
        (call,) = fake_vllm.FakeLLM.calls
        assert machine.touched == [], f"CUDA was initialised in the engine's process: {machine.touched}"
        assert "VLLM_WORKER_MULTIPROC_METHOD" not in call["env"]  # nothing touched: vLLM's fork is safe
        assert call["kwargs"]["dtype"] == "bfloat16" and backend.precision.automatic  # from the device's facts
    finally:
        backend.close()
    assert machine.touched == []


@pytest.mark.parametrize("how", ["driver", "torch"])
def test_vllm_spawns_when_the_caller_initialised_cuda(gpu_machine, minilm_path, monkeypatch, how):
    """The caller's own ``torch.cuda.is_available()`` initialises the driver without setting torch's flag,
    which is all vLLM looks at; we see the driver and make vLLM spawn."""
    gpu_machine(driver_initialised=how == "driver", torch_initialised=how == "torch")
    backend = _start(minilm_path)
    backend.close()
    assert fake_vllm.FakeLLM.calls[-1]["env"].get("VLLM_WORKER_MULTIPROC_METHOD") == "spawn"
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "fork")  # the user's choice wins
    assert gpu.multiprocessing_environment() == {}


def test_a_loaded_but_uninitialised_driver_keeps_vllms_fork(gpu_machine):
    gpu_machine(driver_initialised=False)
    assert gpu.cuda_initialized_here() is False and gpu.multiprocessing_environment() == {}


def _vllm_memory_check(machine, sig):
    """vLLM's start-up check (``request_memory``, recorded for every release): free memory must cover
    ``gpu_memory_utilization`` x total; the engine then holds that budget."""
    device = machine.nvml.gpus[0]

    def check(kwargs):
        fraction = kwargs.get("gpu_memory_utilization")
        if fraction is None:  # vLLM's default: 0.92, or 1.0 where the extensible KV cache is on (0.34)
            extensible = "None" in sig["cache_config"]["gpu_memory_utilization"]
            fraction = 1.0 if extensible and "kv_cache_memory_bytes" not in kwargs else 0.92
        wanted = int(fraction * device.total)
        if device.free < wanted:
            raise ValueError(f"Free memory on device ({device.free / GIB:.2f}/{device.total / GIB:.2f} GiB) on "
                             f"startup is less than desired GPU memory utilization ({fraction})")
        device.free -= wanted
    return check


@pytest.mark.parametrize("version", fake_vllm.versions())
def test_an_encoder_and_a_reranker_share_one_gpu(gpu_machine, minilm_path, bert_cross_encoder_path, version):
    """Sized from their models, both engines start on one 16 GiB device; with vLLM's own default (nearly all of
    the device per engine) the second one is refused."""
    machine = gpu_machine([fake_gpu.FakeGpu(name="Tesla T4", total=16 * GIB, free=15 * GIB, capability=(7, 5))],
                          version=version)
    fake_vllm.FakeLLM.on_start = _vllm_memory_check(machine, fake_vllm.signature(version))
    encoder = _start(minilm_path)
    try:
        reranker = _start(bert_cross_encoder_path, convert="classify")
        reranker.close()
    finally:
        encoder.close()
    first, second = (c["kwargs"] for c in fake_vllm.FakeLLM.calls)
    assert first["dtype"] == second["dtype"] == "float16"  # no bfloat16 on a T4
    assert first["gpu_memory_utilization"] + second["gpu_memory_utilization"] < 0.5
    assert first["kv_cache_memory_bytes"] >= 2 * 16384 * 6 * 12 * 32 * 2 * 2  # two 16k-token steps of MiniLM


def test_an_engine_that_cannot_fit_is_refused_before_the_start_with_numbers(gpu_machine, minilm_path):
    machine = gpu_machine([fake_gpu.FakeGpu(total=16 * GIB, free=1 * GIB)])
    backend = LocalVllmBackend(EngineConfig(model=minilm_path), lazy=True)
    with pytest.raises(gpu.GpuMemoryError) as err:
        backend.start()
    message = str(err.value)
    assert "weights" in message and "KV cache" in message and "1.0 of 16.0 GiB free" in message
    assert "GPU 0" in message and "CUDA_VISIBLE_DEVICES" in message
    assert fake_vllm.FakeLLM.calls == [] and machine.touched == []


def test_an_explicit_memory_fraction_is_kept_and_checked(gpu_machine, minilm_path):
    gpu_machine([fake_gpu.FakeGpu(total=80 * GIB, free=40 * GIB)])
    backend = _start(minilm_path, gpu_memory_utilization=0.3)
    backend.close()
    kwargs = fake_vllm.FakeLLM.calls[-1]["kwargs"]
    assert kwargs["gpu_memory_utilization"] == 0.3 and "kv_cache_memory_bytes" not in kwargs
    with pytest.raises(gpu.GpuMemoryError, match=r"gpu_memory_utilization=0.9 asks for 72.0 GiB"):
        LocalVllmBackend(EngineConfig(model=minilm_path, gpu_memory_utilization=0.9), lazy=True).start()


def test_a_memory_plan_counts_weights_kv_and_activations(minilm_path):
    plan = gpu.plan_memory(minilm_path, dtype="float16", max_model_len=None, max_num_batched_tokens=4096)
    assert 22_000_000 * 2 <= plan.weights <= 23_000_000 * 2  # all-MiniLM-L6-v2 has 22.7M parameters
    per_token_kv = 2 * 6 * 12 * 32 * 2
    assert plan.kv_cache == 2 * 4096 * per_token_kv
    assert plan.total < 2 * GIB and plan.fraction(80 * GIB) == 0.02
    halves = gpu.plan_memory(minilm_path, dtype="float16", max_model_len=None, max_num_batched_tokens=4096,
                             tensor_parallel_size=2)
    assert halves.weights == plan.weights // 2 and halves.kv_cache == plan.kv_cache // 2


def test_more_tensor_parallel_ranks_than_visible_gpus_are_refused_before_the_start(gpu_machine, monkeypatch):
    from mteb_vllm.errors import UsageError
    from mteb_vllm.preflight import check_engine_fit

    machine = gpu_machine([fake_gpu.FakeGpu(uuid="GPU-a"), fake_gpu.FakeGpu(uuid="GPU-b")])
    check_engine_fit(2)
    with pytest.raises(UsageError, match=r"tensor_parallel_size=4 needs 4 GPUs, but only 2 visible"):
        check_engine_fit(4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-b")
    with pytest.raises(UsageError, match=r"needs 2 GPUs, but only 1 visible \(CUDA_VISIBLE_DEVICES=GPU-b\)"):
        check_engine_fit(2)
    assert machine.touched == []
