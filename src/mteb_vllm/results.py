"""What a results folder holds, and what a benchmark still lacks in it.

Why: with ``--workers`` or ``--shard``, many independent drivers write one results folder (mteb's
``ResultCache`` layout: ``results/{model}/{revision}[/experiments/{experiment}]/{task}.json``). Before a
leaderboard submission or a rerun, a user needs one table of every score there and the list of tasks each
run is missing, without starting anything.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunKey:
    """One model run: model folder name, revision, experiment (e.g. ``dtype_bfloat16``; "" for none)."""

    model: str
    revision: str
    experiment: str = ""

    def __str__(self) -> str:
        return f"{self.model} @ {self.revision}" + (f" [{self.experiment}]" if self.experiment else "")


@dataclass(frozen=True)
class ResultRow:
    run: RunKey
    task: str
    metric: str
    score: float | None
    path: Path
    #: why the file is not a complete result ("unreadable", "main score is NaN"), or None when it is one
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.problem is None and self.score is not None


@dataclass
class ResultsTable:
    """Every result file found, and per run the expected tasks that have none."""

    folder: Path
    rows: list[ResultRow] = field(default_factory=list)
    missing: dict[RunKey, list[str]] = field(default_factory=dict)
    #: JSON files in the results layout that are not mteb task results (another tool's files): skipped
    foreign: list[Path] = field(default_factory=list)

    @property
    def runs(self) -> list[RunKey]:
        return sorted({r.run for r in self.rows}, key=str)


def _task_files(root: Path) -> list[tuple[RunKey, Path]]:
    found = []
    for path in sorted(root.glob("*/*/*.json")) + sorted(root.glob("*/*/experiments/*/*.json")):
        if path.name == "model_meta.json":
            continue
        rel = path.relative_to(root).parts
        experiment = rel[3] if len(rel) == 5 else ""
        found.append((RunKey(rel[0], rel[1], experiment), path))
    return found


def _is_task_result(path: Path) -> bool | None:
    """True for an mteb task result file, False for another JSON file, None when it cannot be parsed (a result
    half written by a killed run looks like this)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return isinstance(data, dict) and "task_name" in data and "scores" in data


def _main_score(path: Path) -> tuple[str, float | None, str | None]:
    from mteb.results import TaskResult

    try:
        result = TaskResult.from_disk(path)
    except Exception as exc:  # a half-written file of a killed run: shown as unreadable, evaluated again
        logger.warning("unreadable result file %s (%s)", path, exc)
        return "unreadable", None, "unreadable"
    try:
        from .tasks import get_tasks

        metric = get_tasks([result.task_name])[0].metadata.main_score
    except Exception:  # a task this mteb version does not know
        metric = "main_score"
    try:
        score = float(result.get_score())
    except Exception:
        return metric, None, None
    # NaN: degenerate vectors (all zero, constant); `mteb-vllm run` evaluates such a task again
    return metric, score, "main score is NaN" if math.isnan(score) else None


class NotAResultsFolderError(UsageError):
    """The folder holds JSON files, none of them an mteb result (another tool's folder)."""


def collect_results(folder: str | Path, expected_tasks: list[str] | None = None) -> ResultsTable:
    """Read ``folder`` (the ``--output-folder`` of runs); with ``expected_tasks``, list what each run lacks.

    Only mteb task results are read (JSON with ``task_name`` and ``scores``); other JSON files in the same
    layout are skipped. A folder whose JSON files are all something else raises
    :class:`NotAResultsFolderError` instead of a table of unreadable rows. A result whose main score is NaN
    counts as missing.
    """
    folder = Path(folder).expanduser()
    root = folder / "results" if (folder / "results").is_dir() else folder
    table = ResultsTable(folder=folder)
    for run, path in _task_files(root):
        kind = _is_task_result(path)
        if kind is False:
            table.foreign.append(path)
            continue
        if kind is None:
            logger.warning("unreadable result file %s (not valid JSON)", path)
            table.rows.append(ResultRow(run, path.stem, "unreadable", None, path, "unreadable"))
            continue
        metric, score, problem = _main_score(path)
        table.rows.append(ResultRow(run, path.stem, metric, score, path, problem))
    if table.foreign and not any(r.problem != "unreadable" for r in table.rows):
        examples = ", ".join(str(p.relative_to(root)) for p in table.foreign[:3])
        raise NotAResultsFolderError(
            f"{folder} is not a results folder: none of its {len(table.foreign) + len(table.rows)} JSON file(s) "
            f"is an mteb task result (e.g. {examples}); pass the --output-folder of `mteb-vllm run`")
    if expected_tasks is not None:
        present: dict[RunKey, set[str]] = {}
        for row in table.rows:
            if row.complete:
                present.setdefault(row.run, set()).add(row.task)
        for run in table.runs:
            lacking = [t for t in expected_tasks if t not in present.get(run, set())]
            if lacking:
                table.missing[run] = lacking
    return table
