"""`mteb-vllm parity`: reference (sentence-transformers through mteb's loader) vs ours on the same weights."""

import json
import os
import subprocess
import sys

import pytest

from mteb_vllm.parity import run_parity

pytestmark = pytest.mark.engine


def test_packaged_minilm_matches_reference_on_demo_tasks(minilm_encoder):
    report = run_parity(minilm_encoder.model_path, model_name="sentence-transformers/all-MiniLM-L6-v2",
                        engine_args={"backend": minilm_encoder.backend})
    assert {t.task for t in report.tasks} == {"MtebVllmDemoSTS", "MtebVllmDemoRetrieval"}
    for task in report.tasks:
        assert abs(task.delta) <= 1e-3 and task.within_tolerance
        assert task.inputs_compared > 0 and task.min_cosine >= 0.99999
    assert not report.failed


def test_wrong_prompt_is_caught_and_named(minilm_encoder):
    report = run_parity(minilm_encoder.model_path, model_name="sentence-transformers/all-MiniLM-L6-v2",
                        tasks=["MtebVllmDemoSTS"], prompt_dict={"STS": "zebra quantum pancake: "},
                        engine_args={"backend": minilm_encoder.backend})
    (task,) = report.tasks
    assert task.min_cosine < 0.99  # the prompt reached our side only
    assert [t.task for t in report.failed] == ["MtebVllmDemoSTS"]
    assert "**NO**" in report.markdown()


@pytest.mark.bm25s  # the reranked retrieval task's first stage
def test_cross_encoder_parity_detects_the_kind(bert_reranker, bert_cross_encoder_path):
    report = run_parity(bert_cross_encoder_path, engine_args={"backend": bert_reranker.backend})
    assert report.kind == "cross-encoder"
    (task,) = report.tasks
    assert task.task == "MtebVllmDemoRetrieval" and task.max_abs_diff <= 1e-4 and not report.failed


def _cli(*args, tmp_path):
    return subprocess.run([sys.executable, "-m", "mteb_vllm.cli", "parity", *args, "--output-folder", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_default_passes_and_writes_reports(tmp_path):
    proc = _cli(tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "parity.json").read_text())
    assert data["failed"] == [] and len(data["tasks"]) == 2
    assert all(abs(t["delta"]) <= 1e-3 for t in data["tasks"])
    assert (tmp_path / "parity.md").read_text().startswith("# Parity")


def test_cli_exits_non_zero_and_names_the_task(tmp_path):
    proc = _cli("--tasks", "MtebVllmDemoSTS", "--prompt", "STS=zebra quantum pancake: ", tmp_path=tmp_path)
    assert proc.returncode != 0
    assert "MtebVllmDemoSTS" in proc.stderr and "parity FAILED" in proc.stderr
