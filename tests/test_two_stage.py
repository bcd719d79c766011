"""The two-stage run (first stage → top_k → cross-encoder) on the bundled retrieval demo task."""

import json

import numpy as np
import pytest

from mteb_vllm import rerank
from mteb_vllm.errors import MtebVllmError

pytestmark = pytest.mark.engine


def _result_files(folder):
    """Result files by model: {folder}/results/{model}/{revision}[/experiments/{experiment}]/{task}.json"""
    return {p.relative_to(folder / "results").parts[0]: p for p in folder.rglob("MtebVllmDemoRetrieval.json")
            if "predictions" not in p.parts}


@pytest.mark.bm25s
def test_bm25s_then_cross_encoder_saves_both_stages(bert_reranker, tmp_path):
    run = rerank(None, bert_reranker, "bm25s", top_k=5, output_folder=tmp_path, show_progress_bar=False)
    (row,) = run.scores()
    assert row.task == "MtebVllmDemoRetrieval" and row.metric == "ndcg_at_10"
    files = _result_files(tmp_path)
    names = {run.first_stage_model, run.reranker_model}
    assert set(files) == {n.replace("/", "__") for n in names}, files
    assert "bm25" in run.first_stage_model
    saved = {}
    for model, path in files.items():
        data = json.loads(path.read_text())
        assert data["task_name"] == "MtebVllmDemoRetrieval"
        saved[model] = data["scores"]["test"][0]["main_score"]
    assert saved == {run.first_stage_model.replace("/", "__"): row.first_stage,
                     run.reranker_model.replace("/", "__"): row.second_stage}  # the printed scores are the saved ones
    predictions = json.loads(next(run.prediction_folder.glob("*.json")).read_text())
    assert all(len(docs) >= 5 for docs in predictions["default"]["test"].values())


def test_dense_first_stage_with_our_encoder(bert_reranker, minilm_encoder, tmp_path):
    run = rerank("MtebVllmDemoRetrieval", bert_reranker, minilm_encoder, top_k=3, output_folder=tmp_path,
                 show_progress_bar=False)
    (row,) = run.scores()
    import mteb

    from mteb_vllm.demo import MtebVllmDemoRetrieval

    alone = mteb.evaluate(minilm_encoder, MtebVllmDemoRetrieval(), cache=None, show_progress_bar=False)
    assert row.first_stage == alone.task_results[0].get_score()  # the first stage is the encoder's own run
    assert np.isfinite(row.second_stage)
    assert run.first_stage_model == "sentence-transformers/all-MiniLM-L6-v2"


def test_rejects_non_retrieval_tasks_and_bad_top_k(bert_reranker):
    with pytest.raises(MtebVllmError, match="needs retrieval tasks"):
        rerank("MtebVllmDemoSTS", bert_reranker)
    with pytest.raises(MtebVllmError, match="top_k"):
        rerank(None, bert_reranker, top_k=0)


def test_missing_bm25s_names_the_install(monkeypatch):
    import sys

    from mteb_vllm.two_stage import _first_stage_model

    monkeypatch.setitem(sys.modules, "bm25s", None)
    with pytest.raises(MtebVllmError, match=r"pip install 'mteb-vllm\[demo\]'"):
        _first_stage_model("bm25s", {})
