"""`mteb-vllm parity`: reference (sentence-transformers through mteb's loader) vs ours on the same weights."""

import json

import pytest

from mteb_vllm.cli import main
from mteb_vllm.parity import run_parity

pytestmark = pytest.mark.engine


def test_cli_default_passes_and_writes_reports(minilm_encoder, borrow_engines, tmp_path, capsys):
    """`mteb-vllm parity` with no arguments: the packaged MiniLM matches the reference on the demo tasks."""
    borrow_engines(minilm_encoder)
    assert main(["parity", "--output-folder", str(tmp_path)]) == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "parity.json").read_text())
    assert data["failed"] == [] and {t["task"] for t in data["tasks"]} == {"MtebVllmDemoSTS", "MtebVllmDemoRetrieval"}
    for task in data["tasks"]:
        assert abs(task["delta"]) <= 1e-3 and task["within_tolerance"]
        assert task["inputs_compared"] > 0 and task["min_cosine"] >= 0.99999
    assert (tmp_path / "parity.md").read_text().startswith("# Parity")


def test_wrong_prompt_is_caught_named_and_exits_non_zero(minilm_encoder, borrow_engines, tmp_path, capsys):
    borrow_engines(minilm_encoder)
    code = main(["parity", "--tasks", "MtebVllmDemoSTS", "--prompt", "STS=zebra quantum pancake: ",
                 "--output-folder", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 3 and "MtebVllmDemoSTS" in err and "parity FAILED" in err
    data = json.loads((tmp_path / "parity.json").read_text())
    (task,) = data["tasks"]
    assert task["min_cosine"] < 0.99  # the prompt reached our side only
    assert data["failed"] == ["MtebVllmDemoSTS"] and "**NO**" in (tmp_path / "parity.md").read_text()


@pytest.mark.bm25s  # the reranked retrieval task's first stage
def test_cross_encoder_parity_detects_the_kind(bert_reranker, bert_cross_encoder_path):
    report = run_parity(bert_cross_encoder_path, engine_args={"backend": bert_reranker.backend})
    assert report.kind == "cross-encoder"
    (task,) = report.tasks
    assert task.task == "MtebVllmDemoRetrieval" and task.max_abs_diff <= 1e-4 and not report.failed
