"""The precision policy: what dtype="auto" becomes, decided from the hardware, never an emulated precision."""

from __future__ import annotations

import logging

import pytest
import torch

from mteb_vllm import precision


@pytest.fixture
def cpu_supports(monkeypatch):
    """Pretend the CPU has (or lacks) native bf16/fp16 matmuls."""

    def set_support(bf16: bool, fp16: bool = False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: fp16, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_fp16_supported", lambda: fp16, raising=False)

    return set_support


def test_auto_on_a_cpu_with_native_bf16_is_bfloat16(cpu_supports):
    cpu_supports(bf16=True)
    choice = precision.resolve_dtype("auto", on_cpu=True)
    assert (choice.dtype, choice.automatic) == ("bfloat16", True)


def test_auto_on_a_cpu_without_it_is_float32_never_emulated_float16(cpu_supports):
    cpu_supports(bf16=False)
    choice = precision.resolve_dtype("auto", on_cpu=True)
    assert (choice.dtype, choice.automatic) == ("float32", True)
    assert "emulated" in precision.cpu_emulation_reason("float16")


def _gpu(capability, name="GPU"):
    from mteb_vllm.gpu import GpuDevice

    return GpuDevice(index=0, name=name, total_bytes=16 * 2**30, free_bytes=15 * 2**30, capability=capability)


def test_on_a_gpu_auto_is_decided_from_the_device_before_any_engine_starts():
    """bfloat16 from compute capability 8.0, float16 below it (float32 for the models vLLM refuses in float16);
    before, GPU runs stayed "auto" until the engine started, and results were looked up under dtype_auto."""
    assert precision.resolve_dtype("auto", on_cpu=False, devices=[_gpu((9, 0))]).dtype == "bfloat16"
    assert precision.resolve_dtype("auto", on_cpu=False, devices=[_gpu((8, 0)), _gpu((7, 5))]).dtype == "float16"
    assert precision.resolve_dtype("auto", on_cpu=False, devices=[_gpu((7, 0))]).dtype == "float16"
    assert precision.resolve_dtype("auto", on_cpu=False, devices=[_gpu((7, 5))], model_type="gemma2").dtype == "float32"
    assert precision.resolve_dtype("auto", on_cpu=False, devices=[_gpu((8, 6))], model_type="gemma2").dtype == "bfloat16"
    # no device facts at all (no NVML, the probe failed): vLLM's choice, learnt at the start
    assert precision.resolve_dtype("auto", on_cpu=False, devices=[]).dtype == "auto"


def test_on_a_gpu_an_explicit_dtype_wins_and_an_impossible_one_is_refused():
    assert precision.resolve_dtype("float32", on_cpu=False, devices=[_gpu((9, 0))]).dtype == "float32"
    assert precision.resolve_dtype("half", on_cpu=False, devices=[_gpu((9, 0))]).dtype == "float16"
    with pytest.raises(ValueError, match=r"bfloat16 is not supported on GPU 0 \(Tesla T4, compute capability 7.5"):
        precision.resolve_dtype("bfloat16", on_cpu=False, devices=[_gpu((7, 5), "Tesla T4")])


def test_an_explicit_dtype_wins_and_an_emulated_one_is_warned_about(cpu_supports, caplog):
    cpu_supports(bf16=False)
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        choice = precision.resolve_dtype("half", on_cpu=True)
    assert (choice.dtype, choice.automatic) == ("float16", False)
    assert "several times slower" in caplog.text
    assert precision.resolve_dtype("float", on_cpu=True).dtype == "float32"


def test_the_probe_answers_for_this_machine():
    """On this project's EPYC (AVX512-BF16) bf16 is native; elsewhere the answer must at least be consistent."""
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert (precision.cpu_emulation_reason("bfloat16") is None) == native
    assert precision.cpu_emulation_reason("float32") is None
