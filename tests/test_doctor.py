"""`mteb-vllm doctor`: one command that checks a machine: versions, device, precision, parity, throughput."""

from __future__ import annotations

import json

import pytest

from mteb_vllm.cli import main
from mteb_vllm.doctor import run_doctor


@pytest.mark.engine
def test_the_doctor_checks_this_machine_on_the_shared_engine(minilm_encoder, tmp_path, capsys):
    """On the session's engine (float32): parity with the reference on the demo tasks through run_parity,
    throughput against sentence-transformers, and what dtype='auto' would pick here."""
    from mteb_vllm.precision import engine_runs_on_cpu, resolve_dtype

    report = run_doctor(minilm_encoder.model_path, model_name="sentence-transformers/all-MiniLM-L6-v2",
                        backend=minilm_encoder.backend, texts=24)
    assert report.ok and report.computed_in == "float32"
    assert {t.task for t in report.parity.tasks} == {"MtebVllmDemoSTS", "MtebVllmDemoRetrieval"}
    assert all(abs(t.delta) <= 1e-3 and t.min_cosine >= 0.99999 for t in report.parity.tasks)
    assert report.precision == resolve_dtype("auto", on_cpu=engine_runs_on_cpu()).dtype != "auto"
    assert report.device.startswith("CPU: ") or not engine_runs_on_cpu()
    assert {"vllm", "torch", "torch built for CUDA", "mteb", "sentence-transformers"} <= set(report.versions)
    backends = [t.backend for t in report.throughput]
    assert backends[0] == "mteb-vllm" and backends[1].startswith("sentence-transformers")
    assert all(t.texts == 24 and t.seconds > 0 for t in report.throughput)
    text = report.markdown()
    assert "| dtype='auto' here |" in text and "vs sentence-transformers" in text and text.rstrip().startswith("# mteb")
    assert json.loads(report.to_json())["ok"] is True


def test_the_doctor_command_refuses_bad_numbers_before_anything_starts(capsys):
    assert main(["doctor", "--texts", "-1"]) == 2
    assert "--texts must be 0 or more" in capsys.readouterr().err
    assert main(["doctor", "--tolerance", "nan"]) == 2
