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


def test_on_a_gpu_auto_is_vllms_choice():
    assert precision.resolve_dtype("auto", on_cpu=False).dtype == "auto"


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
