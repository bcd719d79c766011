"""The command line. One real end-to-end run of the installed entry point (`run` → `results` → resumed rerun, in
child processes); every other case calls ``main([...])`` in this process, on the session's engines."""

import json
import os
import subprocess
import sys

import pytest

from mteb_vllm.cli import main

DEMO = ("MtebVllmDemoSTS", "MtebVllmDemoRetrieval")


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "mteb_vllm.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", "MTEB_VLLM_NO_PROGRESS": "1"})


def _scores(stdout: str) -> dict[str, str]:
    """{task: value} of a printed results table: `run` prints task, metric, value, ...; `results` puts the run
    first."""
    scores = {}
    for line in stdout.splitlines():
        words = line.split()
        at = next((i for i, w in enumerate(words) if w.startswith("MtebVllmDemo")), None)
        if at is not None and len(words) > at + 2:
            scores[words[at]] = words[at + 2]
    return scores


@pytest.mark.engine
@pytest.mark.slow
def test_the_demo_run_scores_as_the_reference_results_lists_it_and_a_rerun_resumes(tmp_path, minilm_path):
    """What a new user types, as processes: `mteb-vllm run` (no arguments: packaged MiniLM, demo tasks, the
    precision policy's dtype) scores within 5e-3 of mteb's float32 reference and files the results under that
    dtype; `results` lists the same scores; the same run again starts no engine and evaluates nothing."""
    import mteb

    from mteb_vllm import demo_tasks
    from mteb_vllm.parity import reference_model
    from mteb_vllm.precision import engine_runs_on_cpu, resolve_dtype
    from mteb_vllm.resolve import registry_meta

    out, cache = str(tmp_path / "results"), str(tmp_path / "cache")
    dtype = resolve_dtype("auto", on_cpu=engine_runs_on_cpu()).dtype
    run = _cli("run", "--output-folder", out, "--cache-dir", cache)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f", {dtype}: 2 task(s)" in run.stdout and "engine started in" in run.stdout
    for noise in ("Loading safetensors", "FutureWarning", "WARNING vllm", "NUMA binding"):
        assert noise not in run.stderr, noise  # vLLM's start-up chatter stays out (--verbose shows it)
    files = {p.stem: p for p in (tmp_path / "results").rglob("MtebVllmDemo*.json")}
    assert set(files) == set(DEMO) and all(f"dtype_{dtype}" in str(p) for p in files.values())
    saved = {task: json.loads(p.read_text())["scores"]["test"][0]["main_score"] for task, p in files.items()}
    assert _scores(run.stdout) == {task: f"{score:.4f}" for task, score in saved.items()}
    reference = reference_model(minilm_path, registry_meta("sentence-transformers/all-MiniLM-L6-v2"),
                                cross_encoder=False)
    for result in mteb.evaluate(reference, demo_tasks(), cache=None, show_progress_bar=False).task_results:
        assert abs(saved[result.task_name] - result.get_score()) <= 5e-3, (result.task_name, saved)

    listed = _cli("results", out, "--tasks", *DEMO)
    assert listed.returncode == 0 and "every run has all 2 task(s)" in listed.stdout, listed.stdout + listed.stderr
    assert _scores(listed.stdout) == _scores(run.stdout)

    again = _cli("run", "--output-folder", out, "--cache-dir", cache)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 task(s) already done, 0 evaluated, 0 failed" in again.stdout
    assert "engine started" not in again.stdout and _scores(again.stdout) == _scores(run.stdout)


def test_bad_model_path_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--model", "/no/such/dir", "--output-folder", str(tmp_path)]) == 2  # a usage error
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


@pytest.mark.engine
@pytest.mark.bm25s
def test_rerank_prints_both_stages_and_saves_them(tmp_path, bert_reranker, bert_cross_encoder_path,
                                                  borrow_engines, capsys):
    borrow_engines(bert_reranker)
    assert main(["rerank", "--model", bert_cross_encoder_path, "--first-stage", "bm25s", "--top-k", "5",
                 "--dtype", "float32", "--output-folder", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("task"))
    assert header.split() == ["task", "main", "score", "first", "stage", "reranked", "delta"]
    row = next(line for line in out.splitlines() if line.startswith("MtebVllmDemoRetrieval")).split()
    assert row[1] == "ndcg_at_10"
    saved = sorted(json.loads(p.read_text())["scores"]["test"][0]["main_score"]
                   for p in tmp_path.rglob("MtebVllmDemoRetrieval.json") if "predictions" not in p.parts)
    assert len(saved) == 2  # both stages, each in mteb's format
    first, reranked, delta = float(row[2]), float(row[3]), float(row[4])
    assert sorted([first, reranked]) == pytest.approx(saved, abs=5e-5) and delta == pytest.approx(reranked - first,
                                                                                                 abs=1e-4)


def test_rerank_without_model_says_what_to_pass(tmp_path, capsys):
    assert main(["rerank", "--output-folder", str(tmp_path)]) == 2
    assert "rerank needs --model" in capsys.readouterr().err


def test_parity_prompt_without_equals_is_refused(capsys):
    assert main(["parity", "--prompt", "query: no key"]) == 2
    assert "--prompt takes KEY=TEXT" in capsys.readouterr().err


@pytest.mark.engine
def test_two_workers_give_the_main_scores_of_one(tmp_path, minilm_encoder, borrow_engines, capsys):
    """Each worker runs its own real engine on its own core; the scores do not depend on the split (the one-process
    run is on the session's engine)."""
    borrow_engines(minilm_encoder)
    runs = {}
    for workers in ("1", "2"):
        code = main(["run", "--workers", workers, "--dtype", "float32", "--no-cache", "--output-folder",
                     str(tmp_path / workers)])
        out = capsys.readouterr().out
        assert code == 0, out
        runs[workers] = _scores(out)
    assert runs["1"] == runs["2"] and set(runs["1"]) == set(DEMO)


@pytest.mark.engine
def test_shards_of_a_run_fill_one_folder_and_results_shows_what_is_missing(tmp_path, minilm_encoder,
                                                                          borrow_engines, capsys):
    """Two shards of the demo run write one folder; `results` lists the scores, and before the second shard
    ran, what was missing."""
    borrow_engines(minilm_encoder)
    out = str(tmp_path / "shared")

    def cli(*args):
        code = main(list(args))
        return code, capsys.readouterr().out

    code, first = cli("run", "--shard", "0/2", "--dtype", "float32", "--no-cache", "--output-folder", out)
    assert code == 0 and "shard 0/2: 1 of 2 task(s)" in first
    code, missing = cli("results", out, "--tasks", *DEMO)
    assert code == 1 and "1 of 2 task(s) missing" in missing
    code, second = cli("run", "--shard", "1/2", "--dtype", "float32", "--no-cache", "--output-folder", out)
    assert code == 0 and "shard 1/2: 1 of 2 task(s)" in second
    code, done = cli("results", out, "--tasks", *DEMO)
    assert code == 0 and "every run has all 2 task(s)" in done
    assert _scores(first) | _scores(second) == _scores(done) and set(_scores(done)) == set(DEMO)


@pytest.mark.xdist_group("benchmark-registry")  # mteb builds it in ~2 s once per process: one worker of make test-fast
def test_results_lists_what_a_benchmark_lacks(tmp_path, capsys):
    """`mteb-vllm results FOLDER --benchmark NAME`: the scores there, and every task of the benchmark missing."""
    import mteb

    from mteb_vllm import VllmEncoderWrapper, demo_tasks
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
