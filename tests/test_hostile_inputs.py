"""Hostile and careless input, one regression test per case found on a fresh install (issue 10).

Each case failed once: a crash, a hang, a leak or a silently wrong answer. Logic cases run on the FakeBackend
or stop before any engine; cases that need real processes (signals, orphans, the multiprocess engine, threads
on the real engine) are marked ``engine``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from mteb.mocks.mock_tasks.reranking import MockRerankingTask
from mteb.mocks.mock_tasks.sts import MockSTSTask

from mteb_vllm import VllmCrossEncoderWrapper, VllmEncoderWrapper
from mteb_vllm.cli import main
from mteb_vllm.errors import (
    EngineArgumentError,
    InvalidInputError,
    MissingScoreHeadError,
    RemoteCodeError,
    UnsafeNameError,
)
from mteb_vllm.testing import FakeBackend

STS = MockSTSTask().metadata
RERANKING = MockRerankingTask().metadata
CLI = [sys.executable, "-m", "mteb_vllm.cli"]


def _encode(wrapper, texts, meta=STS):
    return wrapper.encode([{"text": texts}], task_metadata=meta, hf_split="test", hf_subset="default")


def _fake_encoder():
    backend = FakeBackend()
    return VllmEncoderWrapper("fake/encoder", backend=backend), backend


# --- checked too late: now refused before any engine starts, in one line ------------------------------------
def test_output_folder_that_is_a_file_or_cannot_be_written(tmp_path, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    assert main(["run", "--output-folder", str(a_file)]) == 2
    assert "is an existing file, not a folder" in capsys.readouterr().err
    assert main(["run", "--output-folder", str(a_file / "sub")]) == 1  # a folder that cannot be created
    assert "cannot be written" in capsys.readouterr().err
    assert main(["run", "--output-folder", "/proc/self"]) == 1  # an existing folder nothing can be written to
    err = capsys.readouterr().err
    assert "cannot be written" in err and "Traceback" not in err


def test_a_task_whose_data_cannot_be_had_offline_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Nothing cached: the hub and datasets libraries read HF_HOME once at import, so point their caches here.
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "empty-datasets")
    assert main(["run", "--tasks", "STS12", "--output-folder", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line
    assert "STS12: dataset mteb/sts12-sts" in err and "HF_HUB_OFFLINE" in err and "Connect to the network" in err


@pytest.mark.slow
def test_preflight_failures_come_before_vllm_is_imported(tmp_path):
    """The CLI's checks run in a fresh process and must not have imported vLLM when they fail."""
    script = textwrap.dedent(f"""
        import sys
        from mteb_vllm.cli import main
        codes = [main(["run", "--output-folder", {str(tmp_path / "file")!r}]),
                 main(["run", "--tasks", "STS12", "--output-folder", {str(tmp_path / "out")!r}]),
                 main(["run", "--tasks", "NoSuchTask", "--output-folder", {str(tmp_path / "out")!r}]),
                 main(["run", "--tensor-parallel-size", "64", "--output-folder", {str(tmp_path / "out")!r}])]
        print(codes, "vllm" in sys.modules)
    """)
    (tmp_path / "file").write_text("x")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert proc.stdout.strip().splitlines()[-1] == "[2, 1, 2, 2] False", proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "did you mean" in proc.stderr.lower() or "not found" in proc.stderr  # mteb's suggestion is kept


def test_an_embedding_checkpoint_is_refused_as_a_reranker(minilm_path, capsys, tmp_path):
    with pytest.raises(MissingScoreHeadError, match=r"no classification head \(BertModel\).*VllmEncoderWrapper"):
        VllmCrossEncoderWrapper(minilm_path, backend="fake")
    assert main(["rerank", "--model", minilm_path, "--output-folder", str(tmp_path)]) == 2
    assert "no classification head" in capsys.readouterr().err
    VllmCrossEncoderWrapper(minilm_path, backend="fake", template=__import__(
        "mteb_vllm.templates", fromlist=["QWEN3_RERANKER"]).QWEN3_RERANKER)  # a template makes it an LLM reranker


def test_more_tensor_parallel_ranks_than_cores_is_refused(capsys, tmp_path):
    assert main(["run", "--tensor-parallel-size", str(os.cpu_count() * 8), "--output-folder", str(tmp_path)]) == 2
    assert "needs at least one CPU core per rank" in capsys.readouterr().err


# --- silently wrong: now an error that names the input, or the right answer ----------------------------------
@pytest.mark.parametrize("bad,kind", [(None, "NoneType"), (5, "int"), (b"abc", "bytes")])
def test_non_strings_are_refused_with_their_position(bad, kind):
    encoder, backend = _fake_encoder()
    with pytest.raises(InvalidInputError, match=rf"input 2 is {kind} .*not str"):
        _encode(encoder, ["a", "b", bad])
    with pytest.raises(InvalidInputError, match=rf"text 1 is {kind}"):
        encoder.embed_texts(["a", bad])
    reranker = VllmCrossEncoderWrapper("fake/reranker", backend=backend)
    with pytest.raises(InvalidInputError, match=rf"query 1 is {kind}"):
        reranker.score_pairs(["q", bad], ["d", "d"])
    with pytest.raises(InvalidInputError, match=rf"document 0 is {kind}"):
        reranker.predict([{"text": ["q"]}], [{"text": [bad]}], task_metadata=RERANKING, hf_split="test",
                         hf_subset="default")
    assert backend.inputs_seen == 0  # refused before anything was computed


def test_a_lone_surrogate_is_named():
    encoder, _ = _fake_encoder()
    with pytest.raises(InvalidInputError, match=r"input 1 is not valid Unicode .*position 3"):
        _encode(encoder, ["fine", "abc\ud800"])
    reranker = VllmCrossEncoderWrapper("fake/reranker", backend=FakeBackend())
    with pytest.raises(InvalidInputError, match=r"document 0 is not valid Unicode"):
        reranker.score_pairs(["q"], ["\udfff"])


def test_empty_input_has_the_embedding_width():
    encoder, backend = _fake_encoder()
    assert encoder.embed_texts([]).shape == (0, backend.dim)
    assert _encode(encoder, []).shape == (0, backend.dim)


@pytest.mark.xdist_group("benchmark-registry")  # mteb builds it in ~2 s once per process: one worker of make test-fast
def test_benchmark_and_tasks_together_select_within_the_benchmark(capsys, tmp_path):
    from mteb_vllm.tasks import TaskSelectionError, select_tasks

    (task,) = select_tasks(["STS12"], "MTEB(eng, v2)")
    assert task.metadata.name == "STS12"
    with pytest.raises(TaskSelectionError, match="STS1 are not part of MTEB"):
        select_tasks(["STS1"], "MTEB(eng, v2)")
    assert main(["run", "--benchmark", "MTEB(eng, v2)", "--tasks", "STS1", "--output-folder", str(tmp_path)]) == 2


def test_local_weights_under_a_registry_name_are_said_and_keep_their_hash(minilm_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        encoder = VllmEncoderWrapper(minilm_path, model_name="intfloat/e5-small", backend="fake")
    assert "under mteb's registry name intfloat/e5-small" in caplog.text
    assert encoder.mteb_model_meta.revision.startswith("local-")


def test_parity_tolerance_must_be_a_non_negative_number(capsys):
    for bad in ("-1", "nan"):
        assert main(["parity", "--tolerance", bad]) == 2
        assert "--tolerance must be a non-negative number" in capsys.readouterr().err


def test_models_with_their_own_code_need_consent(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["X"], "auto_map": {"AutoModel": "m.X"}}')
    with pytest.raises(RemoteCodeError, match="trust_remote_code=True .*--trust-remote-code"):
        VllmEncoderWrapper(str(tmp_path), backend=FakeBackend())
    from mteb_vllm.resolve import resolve_model

    assert resolve_model(str(tmp_path), trust_remote_code=True).trust_remote_code is True


# --- leaks: names that would write outside the output folder ---------------------------------------------------
def test_unsafe_names_never_become_paths():
    encoder, _ = _fake_encoder()
    for name in ("../../escape", "a/b", "..", "x\\y"):
        with pytest.raises(UnsafeNameError, match="task name"):
            _encode(encoder, ["a"], STS.model_copy(update={"name": name}))
    for revision in ("../../x", "/abs", "a/../b", "x\\y", ""):
        with pytest.raises(EngineArgumentError, match="revision must be"):
            VllmEncoderWrapper("fake/encoder", revision=revision, backend=FakeBackend())
    with pytest.raises(UnsafeNameError, match="model name"):
        VllmEncoderWrapper("fake/encoder", model_name="..", backend=FakeBackend())


def test_rerank_checks_both_models_before_any_engine_starts(minilm_path, tmp_path, capsys):
    assert main(["rerank", "--model", str(tmp_path / "no-reranker"), "--output-folder", str(tmp_path)]) == 2
    assert "no-reranker" in capsys.readouterr().err
    from tiny_models import classifier_config_only

    folder = classifier_config_only(minilm_path, tmp_path / "cross-encoder")
    assert main(["rerank", "--model", folder, "--first-stage", str(tmp_path / "no-encoder"),
                 "--output-folder", str(tmp_path)]) == 2
    assert "no-encoder" in capsys.readouterr().err


def test_run_tasks_refuses_an_unsafe_task_name_before_touching_any_file(tmp_path):
    """A saved result that cannot be read is moved aside: with a task named '../x' that would be a file
    outside the output folder, so the name is refused first."""
    from mteb.mocks.mock_tasks.sts import MockSTSTask

    from mteb_vllm.runner import run_tasks

    outside = tmp_path / "outside.json"
    outside.write_text("not a result")
    task = MockSTSTask()
    task.metadata = task.metadata.model_copy(update={"name": "../outside"})
    encoder, _ = _fake_encoder()
    with pytest.raises(UnsafeNameError, match="task name"):
        run_tasks(encoder, [task], output_folder=tmp_path / "out")
    assert outside.read_text() == "not a result" and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_verbose_shows_the_traceback_a_plain_run_leaves_out(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")

    def run(*flags):
        return subprocess.run([sys.executable, "-m", "mteb_vllm.cli", "run", *flags, "--output-folder",
                               str(a_file / "sub")], capture_output=True, text=True, timeout=120)

    plain, verbose = run(), run("--verbose")
    assert plain.returncode == verbose.returncode == 1
    assert "cannot be written" in plain.stderr and "Traceback" not in plain.stderr
    assert "cannot be written" in verbose.stderr and "Traceback" in verbose.stderr


def test_threads_sharing_a_wrapper_tokenize_and_truncate_correctly(minilm_path):
    """A fast tokenizer keeps its truncation setting as state; threads truncating at once must not trip on it."""
    from mteb_vllm.checkpoint import load_tokenizer

    tokenizer = load_tokenizer(minilm_path)
    encoder = VllmEncoderWrapper(minilm_path, backend=FakeBackend(max_model_len=16, tokenizer=tokenizer),
                                 max_model_len=16)
    texts = {i: [f"thread {i} " + "long words here " * (5 + j) for j in range(40)] for i in range(6)}
    expected = {i: encoder.embed_texts(t) for i, t in texts.items()}
    results = _embed_in_threads(encoder, texts, calls=5)
    for i in texts:
        np.testing.assert_array_equal(results[i], expected[i])


def _embed_in_threads(encoder, texts: dict[int, list[str]], calls: int = 1) -> dict[int, np.ndarray]:
    """One thread per key embeds its texts ``calls`` times at once with the others; any thread's error fails."""
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i):
        try:
            for _ in range(calls):
                results[i] = encoder.embed_texts(texts[i])
        except BaseException as exc:  # reported below, with the thread's own error
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:1]
    assert not any(t.is_alive() for t in threads), "a thread hangs"
    return results


# --- the real engine: threads, signals, orphans, the multiprocess mode -------------------------------------------
@pytest.mark.engine
def test_a_wrapper_shared_by_threads_gives_each_its_own_answer(minilm_encoder):
    texts = {i: [f"thread {i} says sentence {j}" for j in range(60)] for i in range(3)}
    expected = {i: minilm_encoder.embed_texts(t) for i, t in texts.items()}
    results = _embed_in_threads(minilm_encoder, texts)
    for i in texts:
        np.testing.assert_allclose(results[i], expected[i], atol=1e-6)
    assert minilm_encoder.embed_texts(["still works"]).shape == (1, 384)


def _engine_processes(root_pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(root_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cmdline(pid: int) -> str:
    import psutil

    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def _alive(pids: list[int]) -> list[int]:
    import psutil

    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def _write_task_module(folder: Path, n_pairs: int | list[int], n_tasks: int) -> Path:
    """A module that registers generated STS tasks as demo tasks, so the real CLI can run them offline.
    ``n_pairs``: pairs per task, one number for all or one per task. No two tasks share a sentence (each
    sentence starts with its task's name), so cache counts of one task are not blurred by another's."""
    sizes = [n_pairs] * n_tasks if isinstance(n_pairs, int) else list(n_pairs)
    module = folder / "generated_tasks.py"
    module.write_text(textwrap.dedent(f"""
        import numpy as np
        from datasets import Dataset, DatasetDict
        from mteb.abstasks.sts import AbsTaskSTS
        from mteb.abstasks.task_metadata import TaskMetadata
        from mteb_vllm.demo import DEMO_TASK_CLASSES, MtebVllmDemoSTS

        WORDS = "time people year way day thing man world life hand part child eye woman place".split()
        SIZES = {sizes!r}

        def make(index):
            rng = np.random.default_rng(index)
            rows = []
            for _ in range(SIZES[index]):
                a = " ".join([f"task{{index}}", *rng.choice(WORDS, size=int(rng.integers(6, 14)))])
                b = " ".join([f"task{{index}}", *rng.choice(WORDS, size=int(rng.integers(6, 14)))])
                rows.append({{"sentence1": a, "sentence2": b, "score": float(rng.uniform(0, 5))}})

            class Generated(AbsTaskSTS):
                metadata = TaskMetadata(**{{**MtebVllmDemoSTS.metadata.model_dump(), "name": f"GeneratedSTS{{index}}",
                                          "description": "generated"}})
                min_score, max_score = 0, 5

                def load_data(self, num_proc=None, **kwargs):
                    self.dataset = DatasetDict({{"test": Dataset.from_list(rows)}})
                    self.data_loaded = True

            return Generated

        for i in range({n_tasks}):
            cls = make(i)
            DEMO_TASK_CLASSES[cls.metadata.name] = cls
    """))
    return module


def _generated_task(folder: Path, name: str):
    """A fresh instance of a generated task, imported in this process; the demo task list the later tests see
    stays the package's own."""
    import importlib

    from mteb_vllm.demo import DEMO_TASK_CLASSES

    registered = dict(DEMO_TASK_CLASSES)
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("generated_tasks").DEMO_TASK_CLASSES[name]()
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("generated_tasks", None)
        DEMO_TASK_CLASSES.clear()
        DEMO_TASK_CLASSES.update(registered)


def _unique_sentences(folder: Path, name: str) -> int:
    task = _generated_task(folder, name)
    task.load_data()
    data = task.dataset["test"]
    return len(set(data["sentence1"]) | set(data["sentence2"]))


@pytest.fixture
def short_tmp():
    """A temp folder with a short path for the CLI's TMPDIR (socket paths hold 107 bytes), checked for leftovers."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mvt-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _leftovers(folder: Path) -> list[Path]:
    """IPC socket files or folders an engine left in the temp folder."""
    return [p for p in folder.rglob("*") if p.is_socket() or p.name.startswith("mteb-vllm-ipc-")]


def _cli_with_generated_tasks(folder: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    code = ("import sys; sys.path.insert(0, %r); import generated_tasks; from mteb_vllm.cli import main; "
            "raise SystemExit(main(%r))" % (str(folder), args))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)


def _poll(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 300,
          interval: float = 0.1) -> None:
    """Wait until ``condition()`` holds (a failed wait names ``what``; a CLI that exits meanwhile fails it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the CLI exited ({proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def _gone_and_clean(engine: list[int], tmp: Path) -> None:
    """Every engine process ends and the sidecar removes the IPC files (the killed CLI cannot)."""
    _poll(lambda: not _alive(engine) and not _leftovers(tmp), "the engine processes to end and the IPC files to go",
          timeout=60)


def _engine_core(proc: subprocess.Popen) -> list[int]:
    return [p for p in _engine_processes(proc.pid) if "EngineCore" in _cmdline(p)]


def _committed(cache: Path) -> int:
    total = 0
    for db in cache.glob("*.sqlite"):
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                total += conn.execute("SELECT count(*) FROM items").fetchone()[0]
        except sqlite3.Error:
            pass
    return total


def _status_rows(output: str) -> dict[str, str]:
    statuses = {"before", "evaluated", "failed"}  # the table's status column (cache columns may follow it)
    return {line.split()[0]: next(w for w in line.split() if w in statuses)
            for line in output.splitlines() if line.startswith("GeneratedSTS")}


def _stop_once_the_engine_runs(proc, sig: int, short_tmp) -> str:
    """Send ``sig`` to a CLI run once its engine core process is up: it exits 128 + sig with the resume hint and
    leaves no engine process and no socket file. Returns its output."""
    _poll(lambda: _engine_core(proc), "the engine core process", proc)
    engine = _engine_processes(proc.pid)
    os.kill(proc.pid, sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, output
    assert f"interrupted ({signal.Signals(sig).name}); finished tasks are saved" in output
    _gone_and_clean(engine, short_tmp)
    return output


@pytest.mark.engine
def test_kill_9_then_sigterm_lose_only_unsaved_work_and_the_rerun_finishes_identically(tmp_path, short_tmp,
                                                                                       minilm_encoder):
    """A multiprocess CLI run (engine in child processes) of two tasks, with the cache:

    1. kill -9 while the second task is being encoded (the first task's result and part of the second's
       embeddings are on disk, watched in the files, not guessed with a sleep): no engine process outlives
       it, no IPC file is left;
    2. the rerun gets SIGTERM once its engine is up: exit code 143 with a resume hint, again nothing left;
    3. the next rerun exits 0 (it used to abort with 'terminate called without an active exception', 134),
       keeps the finished task, takes every stored embedding from the cache and computes only the rest, and
       its score equals the uninterrupted one (the session's engine on the same task)."""
    import mteb

    _write_task_module(tmp_path, n_pairs=[200, 1500], n_tasks=2)
    out, cache = tmp_path / "results", tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MTEB_VLLM_NO_PROGRESS": "1", "TMPDIR": str(short_tmp),
           "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    args = ["run", "--tasks", "GeneratedSTS0", "GeneratedSTS1", "--output-folder", str(out), "--dtype", "float32",
            "--cache-dir", str(cache)]
    first_task = _unique_sentences(tmp_path, "GeneratedSTS0")
    second_task = _unique_sentences(tmp_path, "GeneratedSTS1")

    killed = _cli_with_generated_tasks(tmp_path, args, env)
    _poll(lambda: list(out.rglob("GeneratedSTS0.json")), "the first task's result", killed)
    engine = _engine_processes(killed.pid)
    assert _engine_core(killed), "the multiprocess engine runs in child processes"
    # the second task's first piece (16,384 tokens, ~1,100 of its ~3,000 sentences) is committed: kill at once
    _poll(lambda: _committed(cache) >= first_task + 1000, "part of the second task's embeddings", killed,
          interval=0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    assert not list(out.rglob("GeneratedSTS1.json")), "the kill came after the second task had finished"
    _gone_and_clean(engine, short_tmp)

    _stop_once_the_engine_runs(_cli_with_generated_tasks(tmp_path, args, env), signal.SIGTERM, short_tmp)
    stored = _committed(cache)
    assert first_task < stored < first_task + second_task

    rerun = _cli_with_generated_tasks(tmp_path, args, env)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0 and "terminate called" not in output, output
    assert _leftovers(short_tmp) == []
    assert "1 task(s) already done, 1 evaluated, 0 failed" in output
    assert _status_rows(output) == {"GeneratedSTS0": "before", "GeneratedSTS1": "evaluated"}
    counts = next(line for line in output.splitlines() if line.startswith("embeddings: ")).split()
    cached, computed = int(counts[1]), int(counts[3])
    assert cached == stored - first_task and cached + computed == second_task
    (saved,) = out.rglob("GeneratedSTS1.json")
    score = json.loads(saved.read_text())["scores"]["test"][0]["main_score"]
    uninterrupted = mteb.evaluate(minilm_encoder, _generated_task(tmp_path, "GeneratedSTS1"), cache=None,
                                  show_progress_bar=False).task_results[0].get_score()
    assert abs(score - uninterrupted) <= 1e-6


@pytest.mark.engine
@pytest.mark.full  # the multiprocess case of the test above covers more; this is the user's default mode
def test_kill_9_of_an_in_process_run_resumes(tmp_path, short_tmp):
    """kill -9 of the CLI while it evaluates the second of three tasks, engine in-process: the rerun keeps the
    finished task and evaluates the other two."""
    _write_task_module(tmp_path, n_pairs=1500, n_tasks=3)
    out = tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MTEB_VLLM_NO_PROGRESS": "1", "TMPDIR": str(short_tmp)}
    tasks = ["--tasks", "GeneratedSTS0", "GeneratedSTS1", "GeneratedSTS2", "--output-folder", str(out),
             "--dtype", "float32", "--no-cache"]
    proc = _cli_with_generated_tasks(tmp_path, ["run", *tasks], env)
    _poll(lambda: list(out.rglob("GeneratedSTS0.json")), "the first task's result", proc)
    engine = _engine_processes(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _gone_and_clean(engine, short_tmp)

    rerun = _cli_with_generated_tasks(tmp_path, ["run", *tasks], env)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    assert "1 task(s) already done, 2 evaluated, 0 failed" in output
    assert _status_rows(output) == {"GeneratedSTS0": "before", "GeneratedSTS1": "evaluated",
                                    "GeneratedSTS2": "evaluated"}


@pytest.mark.engine
@pytest.mark.full  # the same handler as SIGTERM, covered above
def test_ctrl_c_stops_the_run_cleanly(tmp_path, short_tmp):
    """SIGINT (Ctrl-C) stops the engine and exits 130 with a resume hint, leaving no process or socket file."""
    _write_task_module(tmp_path, n_pairs=3000, n_tasks=1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MTEB_VLLM_NO_PROGRESS": "1", "TMPDIR": str(short_tmp),
           "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    proc = _cli_with_generated_tasks(tmp_path, ["run", "--tasks", "GeneratedSTS0", "--output-folder",
                                                str(tmp_path / "out"), "--no-cache"], env)
    _stop_once_the_engine_runs(proc, signal.SIGINT, short_tmp)
