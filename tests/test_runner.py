"""The task-by-task run: resume, failures recorded per task, engine-wide errors stop it, precision changes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mteb.mocks.mock_tasks.classification import MockClassificationTask
from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask
from mteb.mocks.mock_tasks.sts import MockSTSTask

from mteb_vllm import VllmEncoderWrapper
from mteb_vllm.backends import BACKENDS, register_backend
from mteb_vllm.errors import EngineStartError
from mteb_vllm.results import collect_results
from mteb_vllm.runner import run_tasks
from mteb_vllm.testing import FakeBackend


def _tasks():
    return [MockSTSTask(), MockRetrievalTask(), MockClassificationTask()]


def test_a_rerun_keeps_finished_tasks_and_evaluates_the_rest(tmp_path):
    backend = FakeBackend()
    model = VllmEncoderWrapper("fake/encoder", backend=backend)
    first = run_tasks(model, _tasks()[:1], output_folder=tmp_path, show_progress_bar=False)
    assert first.line() == "0 task(s) already done, 1 evaluated, 0 failed"
    seen = backend.inputs_seen
    again = run_tasks(model, _tasks(), output_folder=tmp_path, show_progress_bar=False)
    assert [o.status for o in again.outcomes] == ["done before", "evaluated", "evaluated"]
    assert again.outcomes[0].score == pytest.approx(first.outcomes[0].score, abs=1e-12)
    after = backend.inputs_seen
    assert after > seen  # the two new tasks were computed ...
    run_tasks(model, _tasks(), output_folder=tmp_path, show_progress_bar=False)
    assert backend.inputs_seen == after  # ... and a third run computes nothing
    overwritten = run_tasks(model, _tasks()[:1], output_folder=tmp_path, overwrite=True, show_progress_bar=False)
    assert overwritten.outcomes[0].status == "evaluated" and backend.inputs_seen > after


def test_a_half_written_result_file_is_evaluated_again(tmp_path):
    model = VllmEncoderWrapper("fake/encoder", backend=FakeBackend())
    run_tasks(model, _tasks()[:1], output_folder=tmp_path, show_progress_bar=False)
    (path,) = [p for p in tmp_path.rglob("MockSTSTask.json")]
    path.write_text(path.read_text()[:50])  # a run killed while mteb wrote the file
    again = run_tasks(model, _tasks()[:1], output_folder=tmp_path, show_progress_bar=False)
    assert again.outcomes[0].status == "evaluated"
    assert json.loads(path.read_text())["task_name"] == "MockSTSTask"


def test_one_broken_task_is_recorded_and_the_others_go_on(tmp_path):
    model = VllmEncoderWrapper("fake/encoder", backend=FakeBackend())
    broken = MockSTSTask()
    broken.load_data = lambda **kwargs: (_ for _ in ()).throw(ConnectionError("dataset server said 503"))
    summary = run_tasks(model, [broken, MockRetrievalTask()], output_folder=tmp_path, show_progress_bar=False)
    assert [o.status for o in summary.outcomes] == ["failed", "evaluated"]
    assert "dataset server said 503" in summary.outcomes[0].error


def test_an_engine_that_cannot_start_stops_the_run_at_once(tmp_path):
    def broken(config, **options):
        backend = FakeBackend(config)

        def fail(*args, **kwargs):
            raise EngineStartError("vLLM failed to start: out of memory")

        backend.pool = fail
        return backend

    register_backend("fake-broken", broken)
    try:
        model = VllmEncoderWrapper("fake/encoder", backend="fake-broken")
        with pytest.raises(EngineStartError):
            run_tasks(model, _tasks(), output_folder=tmp_path, show_progress_bar=False)
    finally:
        BACKENDS.pop("fake-broken")


def test_a_task_whose_precision_changed_midway_is_evaluated_again_in_one_precision(tmp_path):
    made = []

    def overflowing_on_second_call(config, **options):
        made.append(FakeBackend(config, auto_dtype="bfloat16"))
        if len(made) == 1:  # the first engine overflows from its second call on (sentence2 of the STS task)
            original = made[0].pool

            def pool(inputs, task, desc=""):
                out = original(inputs, task, desc=desc)
                if len(made[0].calls) >= 2:
                    out[0] = np.nan
                return out

            made[0].pool = pool
        return made[-1]

    register_backend("fake-midway", overflowing_on_second_call)
    try:
        model = VllmEncoderWrapper("fake/encoder", backend="fake-midway")
        summary = run_tasks(model, [MockSTSTask()], output_folder=tmp_path, show_progress_bar=False)
    finally:
        BACKENDS.pop("fake-midway")
    assert summary.outcomes[0].status == "evaluated" and summary.dtype == "float32"
    assert len(made) == 2 and made[1].dtype == "float32"
    assert len(made[1].calls) == 2  # both sides again in fp32 (the overflowing call was not redone alone)
    table = collect_results(tmp_path)
    assert [r.run.experiment for r in table.rows] == ["dtype_float32"]


def test_a_task_stopped_by_a_precision_change_is_evaluated_again_and_earlier_tasks_keep_theirs(tmp_path):
    """Retrieval's documents overflow in bfloat16 after its queries were returned in bfloat16: the wrapper stops
    the task (PrecisionChangedError) and the runner evaluates it again in float32. The task before it stays
    bfloat16, filed as such; the retrieval task is filed under float32 only, with float32's score."""
    made = []

    def factory(config, **options):
        made.append(FakeBackend(config, auto_dtype="bfloat16", nonfinite_texts=("another positive",)))
        return made[-1]

    register_backend("fake-overflow-docs", factory)
    try:
        model = VllmEncoderWrapper("fake/encoder", backend="fake-overflow-docs")
        summary = run_tasks(model, [MockSTSTask(), MockRetrievalTask()], output_folder=tmp_path,
                            show_progress_bar=False)
    finally:
        BACKENDS.pop("fake-overflow-docs")
    assert [(o.status, o.dtype) for o in summary.outcomes] == [("evaluated", "bfloat16"), ("evaluated", "float32")]
    filed = sorted((r.task, r.run.experiment) for r in collect_results(tmp_path).rows)
    assert filed == [("MockRetrievalTask", "dtype_float32"), ("MockSTSTask", "dtype_bfloat16")]
    reference = run_tasks(VllmEncoderWrapper("fake/encoder", backend=FakeBackend(), dtype="float32"),
                          [MockRetrievalTask()], show_progress_bar=False)
    assert summary.outcomes[1].score == reference.outcomes[0].score


def test_the_results_table_lists_scores_and_what_is_missing(tmp_path):
    model = VllmEncoderWrapper("fake/encoder", backend=FakeBackend())
    run_tasks(model, _tasks()[:2], output_folder=tmp_path, show_progress_bar=False)
    table = collect_results(tmp_path, ["MockSTSTask", "MockRetrievalTask", "MockClassificationTask"])
    assert sorted(r.task for r in table.rows) == ["MockRetrievalTask", "MockSTSTask"]
    assert all(r.score is not None and r.run.experiment == "dtype_float32" for r in table.rows)
    (run,) = table.runs
    assert table.missing == {run: ["MockClassificationTask"]}


class _LazyGpuBackend(FakeBackend):
    """Reports dtype "auto" until it starts, as a lazily started GPU engine does (vLLM picks the precision)."""

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.dtype = "auto"

    def start(self):
        self.dtype = "bfloat16"

    def pool(self, inputs, task, *, desc=""):
        self.start()  # a lazy engine starts inside its first call
        return super().pool(inputs, task, desc=desc)


def test_a_precision_settled_at_engine_start_files_results_under_it_and_evaluates_once(tmp_path, caplog):
    backend = _LazyGpuBackend()
    model = VllmEncoderWrapper("fake/encoder", backend=backend)
    assert model.mteb_model_meta.experiment_kwargs["dtype"] == "auto"  # the premise
    with caplog.at_level("WARNING", logger="mteb_vllm"):
        summary = run_tasks(model, _tasks()[:1], output_folder=tmp_path, show_progress_bar=False)
    assert "precision changed" not in caplog.text
    assert summary.dtype == "bfloat16" and summary.outcomes[0].status == "evaluated"
    (path,) = tmp_path.rglob("MockSTSTask.json")
    assert "dtype_bfloat16" in str(path) and "dtype_auto" not in str(path)
    seen = backend.inputs_seen
    fresh = _LazyGpuBackend()  # a new run on the same kind of GPU finds the result
    again = run_tasks(VllmEncoderWrapper("fake/encoder", backend=fresh), _tasks()[:1], output_folder=tmp_path,
                      show_progress_bar=False)
    assert again.outcomes[0].status == "done before" and fresh.inputs_seen == 0 and seen > 0


def test_prompt_and_context_settings_are_part_of_a_results_identity(tmp_path, monkeypatch):
    """A run with other prompts (the caller's, or none because the registry's could not be replayed) or another
    context length is never resumed from, or filed with, a run with the defaults."""
    from mteb_vllm.errors import UnsupportedModelError

    def run(**kwargs):
        model = VllmEncoderWrapper("intfloat/e5-small", backend=FakeBackend(), dtype="float32", **kwargs)
        summary = run_tasks(model, _tasks()[:1], output_folder=tmp_path, show_progress_bar=False)
        return summary.outcomes[0].status, model.mteb_model_meta.experiment_name

    assert run() == ("evaluated", "dtype_float32")
    status, name = run(prompt_dict={"STS": "Represent this sentence: "})
    assert status == "evaluated" and name.startswith("dtype_float32__prompts_custom-")
    assert run(prompt_dict={"STS": "Represent this sentence: "}) == ("done before", name)
    assert run(max_model_len=64) == ("evaluated", "dtype_float32__max_model_len_64")

    from mteb_vllm import reference

    real = reference.build_reference

    def failing_registry_loader(meta, *args, **kwargs):
        if meta is not None:
            raise UnsupportedModelError("the registry's loader cannot be reproduced here")
        return real(meta, *args, **kwargs)

    monkeypatch.setattr(reference, "build_reference", failing_registry_loader)
    assert run(ignore_prompt_errors=True) == ("evaluated", "dtype_float32__loader_default")
    monkeypatch.undo()
    assert run() == ("done before", "dtype_float32")
