"""Task-level worker processes: same scores as one process, and a dead worker loses only its task."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from mteb.mocks.mock_tasks.classification import MockClassificationTask
from mteb.mocks.mock_tasks.clustering import MockClusteringTask
from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask
from mteb.mocks.mock_tasks.sts import MockSTSTask

from mteb_vllm import VllmEncoderWrapper
from mteb_vllm.errors import UsageError
from mteb_vllm.runner import run_tasks
from mteb_vllm.workers import WorkerPlan, plan_workers


def _tasks():
    return [MockSTSTask(), MockRetrievalTask(), MockClassificationTask(), MockClusteringTask()]


def _fake(**kwargs):
    return VllmEncoderWrapper("fake/encoder", backend="fake", lazy_start=True, **kwargs)


def test_cpu_workers_get_disjoint_cores_and_too_many_are_refused():
    plans = plan_workers(2)
    assert [p.index for p in plans] == [0, 1]
    assert set(plans[0].cores).isdisjoint(plans[1].cores)
    assert plan_workers(3, endpoints=["http://127.0.0.1:1"]) == [WorkerPlan(0), WorkerPlan(1), WorkerPlan(2)]
    with pytest.raises(UsageError, match="--workers 64 needs at least one CPU core"):
        plan_workers(64)
    with pytest.raises(UsageError, match="positive integer"):
        plan_workers(0)


@pytest.mark.slow
def test_two_workers_give_the_scores_of_one_and_no_output_folder_keeps_no_files(tmp_path, monkeypatch):
    one = run_tasks(_fake(), _tasks(), output_folder=tmp_path / "one", show_progress_bar=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    two = run_tasks(_fake(), _tasks(), output_folder=None, show_progress_bar=False,
                    workers=[WorkerPlan(0), WorkerPlan(1)],
                    worker_kwargs={"model": "fake/encoder", "backend": "fake"})
    assert [o.status for o in two.outcomes] == ["evaluated"] * 4
    assert [(o.task, o.score) for o in two.outcomes] == [(o.task, o.score) for o in one.outcomes]
    assert list((tmp_path / "cwd").iterdir()) == []  # the workers wrote into a folder named "None" before
    again = run_tasks(_fake(), _tasks(), output_folder=tmp_path / "one", show_progress_bar=False,
                      workers=[WorkerPlan(0), WorkerPlan(1)], worker_kwargs={"model": "fake/encoder"})
    assert [o.status for o in again.outcomes] == ["done before"] * 4  # nothing handed to a worker


def holding_fake_backend(config, **options):
    """A FakeBackend whose first call of the run, in whichever worker makes it, holds that worker inside its task
    until it is killed (the folder in MTEB_VLLM_TEST_HOLD gets a file "held" with its pid); every other call
    computes at once. Imported by the workers: a test kills a worker that is certainly in the middle of a task."""
    from mteb_vllm.testing import FakeBackend

    class Holding(FakeBackend):
        def pool(self, inputs, task, *, desc=""):
            folder = Path(os.environ["MTEB_VLLM_TEST_HOLD"])
            try:
                os.close(os.open(folder / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:  # a worker holds already: compute
                return super().pool(inputs, task, desc=desc)
            (folder / "held.tmp").write_text(str(os.getpid()))
            os.rename(folder / "held.tmp", folder / "held")  # the pid is complete when the name appears
            while True:
                time.sleep(0.05)

    return Holding(config)


def _held_worker(folder: Path, timeout: float = 120) -> int:
    """The pid of the worker held inside a task (polls for it)."""
    deadline = time.monotonic() + timeout
    while not (folder / "held").exists():
        assert time.monotonic() < deadline, "no worker reached a task"
        time.sleep(0.05)
    return int((folder / "held").read_text())


@pytest.mark.slow
def test_a_worker_killed_inside_a_task_loses_only_that_task_and_the_rerun_finishes_it(tmp_path, monkeypatch):
    hold = tmp_path / "hold"
    hold.mkdir()
    monkeypatch.setenv("MTEB_VLLM_TEST_HOLD", str(hold))
    kwargs = {"model": "fake/encoder", "backend": f"{__name__}:holding_fake_backend"}
    killed: list[int] = []

    def kill_the_held_worker():
        pid = _held_worker(hold)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_the_held_worker, daemon=True)
    killer.start()
    summary = run_tasks(_fake(), _tasks(), output_folder=tmp_path / "out", show_progress_bar=False,
                        workers=[WorkerPlan(0), WorkerPlan(1)], worker_kwargs=kwargs)
    killer.join(timeout=5)
    assert killed, "no worker was held inside a task"
    (failed,) = [o for o in summary.outcomes if o.status == "failed"]
    assert "exited with code -9 while evaluating it" in failed.error
    assert summary.count("evaluated") == 3  # the other worker finished everything else
    rerun = run_tasks(_fake(), _tasks(), output_folder=tmp_path / "out", show_progress_bar=False)  # resumes from files
    assert [(o.task, o.status) for o in rerun.outcomes if o.status != "done before"] == [(failed.task, "evaluated")]
    assert rerun.count("done before") == 3


@pytest.mark.slow
def test_an_interrupted_parallel_run_stops_a_busy_worker_at_once(tmp_path, monkeypatch):
    """A Python caller's Ctrl-C (here: an on_task callback that raises it) while one worker is inside a task:
    the busy worker is terminated after a short grace instead of being waited on for 30 s (the bug)."""
    import multiprocessing.process

    hold = tmp_path / "hold"
    hold.mkdir()
    monkeypatch.setenv("MTEB_VLLM_TEST_HOLD", str(hold))
    waits: list[float | None] = []
    join = multiprocessing.process.BaseProcess.join
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "join",
                        lambda self, timeout=None: waits.append(timeout) or join(self, timeout))
    workers: list = []
    start = multiprocessing.process.BaseProcess.start
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start",
                        lambda self: workers.append(self) or start(self))

    def interrupt(outcome):
        _held_worker(hold)  # the other worker is inside its task now
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tasks(_fake(), _tasks(), output_folder=tmp_path, show_progress_bar=False, on_task=interrupt,
                  workers=[WorkerPlan(0), WorkerPlan(1)],
                  worker_kwargs={"model": "fake/encoder", "backend": f"{__name__}:holding_fake_backend"})
    held = _held_worker(hold)
    assert [p.exitcode for p in workers if p.pid == held] == [-signal.SIGTERM]  # stopped, not awaited
    assert waits and max(waits) <= 5, waits  # 30 s per worker before the fix


# --- GPUs (a fake NVML and a fake vLLM: tests/fake_gpu.py, tests/fake_vllm.py) --------------------------------
def _gpus(*capabilities):
    import fake_gpu

    return [fake_gpu.FakeGpu(name=f"GPU cc {c[0]}.{c[1]}", capability=c, uuid=f"GPU-{i}000-aaaa")
            for i, c in enumerate(capabilities)]


def test_gpu_workers_get_tensor_parallel_groups_pinned_by_uuid_and_too_many_are_refused(monkeypatch):
    import fake_gpu

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    machine = fake_gpu.install(monkeypatch, _gpus((9, 0), (9, 0), (9, 0), (9, 0)))
    plans = plan_workers(2, tensor_parallel_size=2)
    assert [p.cuda_device for p in plans] == ["GPU-0000-aaaa,GPU-1000-aaaa", "GPU-2000-aaaa,GPU-3000-aaaa"]
    assert [p.cuda_device for p in plan_workers(4)] == [f"GPU-{i}000-aaaa" for i in range(4)]
    with pytest.raises(UsageError, match=r"--workers 3 needs 2 GPUs each \(6 in all\), but 4 are visible; use "
                                         r"--workers 2"):
        plan_workers(3, tensor_parallel_size=2)
    with pytest.raises(UsageError, match="--workers 5 needs one GPU each"):
        plan_workers(5)
    assert machine.touched == []  # counted through NVML: CUDA stays uninitialised in the parent


def test_gpu_workers_that_would_compute_in_different_precisions_are_refused(monkeypatch):
    import fake_gpu

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_gpu.install(monkeypatch, _gpus((8, 0), (7, 5)))
    with pytest.raises(UsageError, match="different precisions.*bfloat16.*float16"):
        plan_workers(2)
    assert len(plan_workers(2, dtype="float16")) == 2  # an explicit precision both GPUs compute
    assert len(plan_workers(1)) == 1


@pytest.fixture(scope="module")
def finished_bfloat16_run(tmp_path_factory, minilm_path):
    """A results folder where the four tasks were evaluated in bfloat16 (once for the module; each case resumes
    from its own copy)."""
    folder = tmp_path_factory.mktemp("finished-bf16")
    done = run_tasks(VllmEncoderWrapper(minilm_path, model_name="sentence-transformers/all-MiniLM-L6-v2",
                                        backend="fake", dtype="bfloat16"), _tasks(),
                     output_folder=folder, show_progress_bar=False)
    assert done.count("evaluated") == 4
    return folder


@pytest.mark.parametrize("how", ["workers", "shard"])
def test_a_gpu_resume_starts_no_engine_and_no_worker_for_finished_tasks(monkeypatch, tmp_path, minilm_path, how,
                                                                        finished_bfloat16_run):
    """The parent knows the precision its workers (or a shard's engine) will compute in from the GPU's facts,
    so finished tasks are found under it and nothing starts. Before, a GPU engine stayed "auto" until it
    started: results were looked up under dtype_auto and every rerun handed every task out again (with
    --shard, it started an engine only to settle the precision)."""
    import fake_gpu
    import fake_vllm

    import shutil

    name = "sentence-transformers/all-MiniLM-L6-v2"
    shutil.copytree(finished_bfloat16_run, tmp_path, dirs_exist_ok=True)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    machine = fake_gpu.install(monkeypatch, _gpus((9, 0), (9, 0)))
    fake_vllm.install(monkeypatch, fake_vllm.versions()[-1])

    def no_worker(*args, **kwargs):
        raise AssertionError("a worker was started for finished tasks")

    monkeypatch.setattr("mteb_vllm.workers.run_parallel", no_worker)
    with VllmEncoderWrapper(minilm_path, model_name=name, lazy_start=True) as parent:
        assert parent.dtype == "bfloat16"
        plans = plan_workers(2) if how == "workers" else None
        summary = run_tasks(parent, _tasks(), output_folder=tmp_path, show_progress_bar=False, workers=plans,
                            worker_kwargs={"model": minilm_path, "model_name": name})
    assert [o.status for o in summary.outcomes] == ["done before"] * 4
    assert fake_vllm.FakeLLM.calls == [] and machine.touched == []
