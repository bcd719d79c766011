"""Task-level worker processes: same scores as one process, and a dead worker loses only its task."""

from __future__ import annotations

import os
import signal
import threading
import time

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
def test_two_workers_give_the_scores_of_one(tmp_path):
    one = run_tasks(_fake(), _tasks(), output_folder=tmp_path / "one", show_progress_bar=False)
    two = run_tasks(_fake(), _tasks(), output_folder=tmp_path / "two", show_progress_bar=False,
                    workers=[WorkerPlan(0), WorkerPlan(1)],
                    worker_kwargs={"model": "fake/encoder", "backend": "fake"})
    assert [o.status for o in two.outcomes] == ["evaluated"] * 4
    assert [(o.task, o.score) for o in two.outcomes] == [(o.task, o.score) for o in one.outcomes]
    again = run_tasks(_fake(), _tasks(), output_folder=tmp_path / "two", show_progress_bar=False,
                      workers=[WorkerPlan(0), WorkerPlan(1)], worker_kwargs={"model": "fake/encoder"})
    assert [o.status for o in again.outcomes] == ["done before"] * 4  # nothing handed to a worker


def slow_fake_backend(config, **options):
    """A FakeBackend that takes its time, so a worker is caught in the middle of a task (imported by workers)."""
    from mteb_vllm.testing import FakeBackend

    return FakeBackend(config, seconds_per_token=2e-4)


@pytest.mark.slow
def test_a_killed_worker_loses_only_its_task_and_the_rerun_finishes_it(tmp_path):
    import psutil

    kwargs = {"model": "fake/encoder", "backend": f"{__name__}:slow_fake_backend"}
    finished: list[str] = []
    killed: list[int] = []

    def kill_a_worker_once_one_task_is_done():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            workers = [p for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())]
            if len(workers) == 2 and finished:
                os.kill(workers[0].pid, signal.SIGKILL)
                killed.append(workers[0].pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker_once_one_task_is_done, daemon=True)
    killer.start()
    summary = run_tasks(_fake(), _tasks(), output_folder=tmp_path, show_progress_bar=False,
                        workers=[WorkerPlan(0), WorkerPlan(1)], worker_kwargs=kwargs,
                        on_task=lambda o: finished.append(o.task))
    killer.join(timeout=5)
    assert killed, "the test never caught two workers busy"
    failed = [o for o in summary.outcomes if o.status == "failed"]
    assert len(failed) <= 1 and all("exited with code -9" in o.error for o in failed), failed
    assert summary.count("evaluated") == 4 - len(failed)  # the other worker finished everything else
    rerun = run_tasks(_fake(), _tasks(), output_folder=tmp_path, show_progress_bar=False,
                      workers=[WorkerPlan(0), WorkerPlan(1)], worker_kwargs={"model": "fake/encoder", "backend": "fake"})
    assert rerun.count("evaluated") == len(failed) and rerun.count("failed") == 0
    assert rerun.count("done before") == 4 - len(failed)


@pytest.mark.slow
def test_workers_with_no_output_folder_keep_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = run_tasks(_fake(), _tasks()[:2], output_folder=None, show_progress_bar=False,
                        workers=[WorkerPlan(0)], worker_kwargs={"model": "fake/encoder", "backend": "fake"})
    assert [o.status for o in summary.outcomes] == ["evaluated"] * 2
    assert list(tmp_path.iterdir()) == []  # it wrote into a folder named "None" before


@pytest.mark.slow
def test_an_interrupted_parallel_run_returns_at_once(tmp_path):
    """A Python caller's Ctrl-C (here: an on_task callback that raises it) stops the workers without waiting
    30 s on each of them."""
    def interrupt(outcome):
        raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_tasks(_fake(), _tasks(), output_folder=tmp_path, show_progress_bar=False, on_task=interrupt,
                  workers=[WorkerPlan(0), WorkerPlan(1)], worker_kwargs={"model": "fake/encoder", "backend": "fake"})
    # 60 s (2 x 30 s) before the fix; a bound far above the fix's few seconds, far below the old wait
    assert time.monotonic() - started < 40
