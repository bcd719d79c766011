import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bad_model_path_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mteb_vllm.cli", "run", "--model", "/no/such/dir",
                           "--output-folder", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2  # a usage error: the command line names something that is not there
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.engine
def test_run_demo_writes_mteb_results(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mteb_vllm.cli", "run", "--tasks", "MtebVllmDemoSTS",
                           "--output-folder", str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cosine_spearman" in proc.stdout
    # vLLM's start-up chatter stays out of a default run (--verbose shows it)
    for noise in ("Loading safetensors", "FutureWarning", "WARNING vllm", "NUMA binding"):
        assert noise not in proc.stderr, noise
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if f == "MtebVllmDemoSTS.json"]
    assert files, "no result file"
    data = json.load(open(files[0]))
    assert data["task_name"] == "MtebVllmDemoSTS" and 0.7 < data["scores"]["test"][0]["main_score"] <= 1


@pytest.mark.engine
def test_rerank_prints_both_stages_and_saves_them(tmp_path, bert_cross_encoder_path):
    proc = subprocess.run([sys.executable, "-m", "mteb_vllm.cli", "rerank", "--model", bert_cross_encoder_path,
                           "--first-stage", "bm25s", "--top-k", "5", "--dtype", "float32",
                           "--output-folder", str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("task"))
    assert header.split() == ["task", "main", "score", "first", "stage", "reranked", "delta"]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("MtebVllmDemoRetrieval"))
    assert row.split()[1] == "ndcg_at_10"
    assert len(list(tmp_path.rglob("MtebVllmDemoRetrieval.json"))) == 2


@pytest.mark.slow
def test_rerank_without_model_says_what_to_pass(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mteb_vllm.cli", "rerank", "--output-folder", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "rerank needs --model" in proc.stderr


def test_parity_prompt_without_equals_is_refused(capsys):
    from mteb_vllm.cli import main

    assert main(["parity", "--prompt", "query: no key"]) == 2
    assert "--prompt takes KEY=TEXT" in capsys.readouterr().err


def _scores(stdout: str) -> dict[str, str]:
    rows = [line.split() for line in stdout.splitlines() if line.startswith("MtebVllmDemo")]
    return {row[0]: row[2] for row in rows}


@pytest.mark.engine
def test_two_workers_give_the_main_scores_of_one(tmp_path):
    """Each worker runs its own real engine on its own core; the scores do not depend on the split."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MTEB_VLLM_NO_PROGRESS": "1"}
    runs = {}
    for workers in ("1", "2"):
        proc = subprocess.run([sys.executable, "-m", "mteb_vllm.cli", "run", "--workers", workers, "--dtype",
                               "float32", "--no-cache", "--output-folder", str(tmp_path / workers)],
                              capture_output=True, text=True, timeout=900, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[workers] = _scores(proc.stdout)
    assert runs["1"] == runs["2"] and len(runs["1"]) == 2


@pytest.mark.engine
def test_shards_of_a_run_fill_one_folder_and_results_shows_what_is_missing(tmp_path):
    """Two shards of the demo run write one folder; `results` lists the scores, and before the second shard
    ran, what was missing."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MTEB_VLLM_NO_PROGRESS": "1"}
    out = str(tmp_path / "shared")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mteb_vllm.cli", *args], capture_output=True, text=True,
                              timeout=600, env=env)

    first = cli("run", "--shard", "0/2", "--dtype", "float32", "--output-folder", out)
    assert first.returncode == 0 and "shard 0/2: 1 of 2 task(s)" in first.stdout, first.stderr[-2000:]
    missing = cli("results", out, "--tasks", "MtebVllmDemoSTS", "MtebVllmDemoRetrieval")
    assert missing.returncode == 1 and "1 of 2 task(s) missing" in missing.stdout
    second = cli("run", "--shard", "1/2", "--dtype", "float32", "--output-folder", out)
    assert second.returncode == 0, second.stderr[-2000:]
    done = cli("results", out, "--tasks", "MtebVllmDemoSTS", "MtebVllmDemoRetrieval")
    assert done.returncode == 0 and "every run has all 2 task(s)" in done.stdout
    assert set(_scores(first.stdout)) | set(_scores(second.stdout)) == {"MtebVllmDemoSTS", "MtebVllmDemoRetrieval"}


def test_results_lists_what_a_benchmark_lacks(tmp_path, capsys):
    """`mteb-vllm results FOLDER --benchmark NAME`: the scores there, and every task of the benchmark missing."""
    import mteb

    from mteb_vllm import VllmEncoderWrapper, demo_tasks
    from mteb_vllm.cli import main
    from mteb_vllm.runner import run_tasks

    sts = [t for t in demo_tasks() if t.metadata.name == "MtebVllmDemoSTS"]
    run_tasks(VllmEncoderWrapper("fake/encoder", backend="fake"), sts, output_folder=tmp_path)
    capsys.readouterr()
    benchmark = mteb.get_benchmark("MTEB(eng, v2)")
    assert main(["results", str(tmp_path), "--benchmark", "MTEB(eng, v2)"]) == 1
    out = capsys.readouterr().out
    assert "MtebVllmDemoSTS" in out and f"{len(benchmark.tasks)} of {len(benchmark.tasks)} task(s) missing" in out
    assert "STS12" in out


def test_rerank_on_a_task_that_is_not_retrieval_is_a_usage_error(tmp_path, capsys):
    """Red-team C12: the README promises exit code 2 for a command line that names something wrong (it was 1)."""
    from mteb_vllm.cli import main

    assert main(["rerank", "--model", "cross-encoder/any", "--tasks", "MtebVllmDemoSTS",
                 "--output-folder", str(tmp_path)]) == 2
    assert "the two-stage run needs retrieval tasks" in capsys.readouterr().err
