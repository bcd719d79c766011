"""What a results folder holds, and what a benchmark still lacks in it.

Why: with ``--workers`` or ``--shard``, many independent drivers write one results folder (mteb's
``ResultCache`` layout: ``results/{model}/{revision}[/experiments/{experiment}]/{task}.json``). Before a
leaderboard submission or a rerun, a user needs one table of every score there and the list of tasks each
run is missing, without starting anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class ResultsTable:
    """Every result file found, and per run the expected tasks that have none."""

    folder: Path
    rows: list[ResultRow] = field(default_factory=list)
    missing: dict[RunKey, list[str]] = field(default_factory=dict)

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


def _main_score(path: Path) -> tuple[str, float | None]:
    from mteb.results import TaskResult

    try:
        result = TaskResult.from_disk(path)
    except Exception as exc:  # a half-written file of a killed run: shown as unreadable, evaluated again
        logger.warning("unreadable result file %s (%s)", path, exc)
        return "unreadable", None
    try:
        from .tasks import get_tasks

        metric = get_tasks([result.task_name])[0].metadata.main_score
    except Exception:  # a task this mteb version does not know
        metric = "main_score"
    try:
        return metric, float(result.get_score())
    except Exception:
        return metric, None


def collect_results(folder: str | Path, expected_tasks: list[str] | None = None) -> ResultsTable:
    """Read ``folder`` (the ``--output-folder`` of runs); with ``expected_tasks``, list what each run lacks."""
    folder = Path(folder).expanduser()
    root = folder / "results" if (folder / "results").is_dir() else folder
    table = ResultsTable(folder=folder)
    for run, path in _task_files(root):
        metric, score = _main_score(path)
        table.rows.append(ResultRow(run, path.stem, metric, score, path))
    if expected_tasks is not None:
        present: dict[RunKey, set[str]] = {}
        for row in table.rows:
            if row.score is not None:
                present.setdefault(row.run, set()).add(row.task)
        for run in table.runs:
            lacking = [t for t in expected_tasks if t not in present.get(run, set())]
            if lacking:
                table.missing[run] = lacking
    return table
