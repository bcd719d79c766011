"""What counts as a result: a NaN main score is not one (resume evaluates it again, `results` lists it as invalid),
and a folder of other JSON files is not a results folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mteb.mocks.mock_tasks.sts import MockSTSTask

from mteb_vllm import VllmEncoderWrapper
from mteb_vllm.cli import main
from mteb_vllm.results import NotAResultsFolderError, collect_results
from mteb_vllm.runner import run_tasks
from mteb_vllm.testing import FakeBackend


class _Zeros(FakeBackend):
    """All-zero vectors, as the red team's hostile server returned them (N7): every similarity is NaN."""

    def embed_one(self, item):
        return np.zeros(self.dim, np.float32)


def _run(folder: Path, backend: FakeBackend):
    return run_tasks(VllmEncoderWrapper("fake/encoder", backend=backend), [MockSTSTask()], output_folder=folder,
                     show_progress_bar=False).outcomes[0]


def test_a_nan_main_score_is_a_failure_and_never_resumed_as_done(tmp_path, caplog):
    """N54: the NaN result counted as complete: `run` kept it as `done before  nan`."""
    outcome = _run(tmp_path, _Zeros())
    assert outcome.status == "failed" and "NaN" in outcome.error
    (saved,) = tmp_path.rglob("MockSTSTask.json")
    assert np.isnan(json.loads(saved.read_text())["scores"]["test"][0]["main_score"])  # what mteb wrote
    with caplog.at_level("WARNING", logger="mteb_vllm"):
        again = _run(tmp_path, FakeBackend())
    assert again.status == "evaluated" and again.score == pytest.approx(1.0, abs=1e-6)
    assert "no valid main score" in caplog.text and list(tmp_path.rglob("MockSTSTask.json.invalid-*"))


def test_results_lists_a_nan_result_as_invalid_and_missing(tmp_path, capsys):
    """N54: `results` said `every run has all 2 task(s)` with a NaN score in the table."""
    _run(tmp_path, _Zeros())
    table = collect_results(tmp_path, ["MockSTSTask"])
    (row,) = table.rows
    assert row.problem == "main score is NaN" and not row.complete
    assert table.missing == {row.run: ["MockSTSTask"]}
    capsys.readouterr()
    assert main(["results", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "NaN (invalid)" in out and "1 result file(s) unreadable or without a valid main score" in out


def _foreign_tree(root: Path) -> None:
    """JSON files in the same folder depth as results, written by other tools (site-packages, N52)."""
    for i, rel in enumerate(["torch/_dynamo/graph_break_registry.json", "jsonschema/schemas/draft7.json",
                             "pkg/data/model_meta.json", "pkg/data/broken.json"]):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{not json" if "broken" in rel else json.dumps({"name": f"thing {i}", "values": [1, 2]}))


def test_a_folder_without_mteb_results_is_refused_with_a_usage_error(tmp_path, capsys):
    """N52: `results site-packages` printed 48 `unreadable` rows and exited 0."""
    _foreign_tree(tmp_path)
    with pytest.raises(NotAResultsFolderError, match="is not a results folder"):
        collect_results(tmp_path)
    assert main(["results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a results folder" in err and "--output-folder" in err


def test_other_json_files_beside_results_are_skipped(tmp_path):
    _run(tmp_path, FakeBackend())
    _foreign_tree(tmp_path / "results")
    table = collect_results(tmp_path, ["MockSTSTask"])
    (result,) = [r for r in table.rows if r.problem != "unreadable"]
    assert result.task == "MockSTSTask" and result.run not in table.missing
    assert len(table.foreign) == 2  # the two JSON documents that are not task results (model_meta.json aside)
