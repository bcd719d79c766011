"""What happened to each task of a run, and to the run: typed results that the runner, the worker processes and
the CLI hand each other.

Why a module of its own: the runner and the workers both make and read these, and the workers' children send
them through a pipe; kept here, below both, neither has to import the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Status = Literal["done before", "evaluated", "failed"]


@dataclass
class TaskOutcome:
    """One task of a run."""

    task: str
    metric: str
    status: Status
    score: float | None = None
    seconds: float = 0.0
    error: str | None = None
    #: Inputs answered from the embedding cache and inputs the engine computed (None without a cache).
    cached: int | None = None
    computed: int | None = None
    #: The precision the task's scores were computed in (tasks of one run differ after a float32 fallback).
    dtype: str | None = None


@dataclass
class RunSummary:
    """Every task of a run, in order, with what happened to it."""

    model: str
    revision: str
    dtype: str
    output_folder: Path | None
    outcomes: list[TaskOutcome] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> list[TaskOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def line(self) -> str:
        return (f"{self.count('done before')} task(s) already done, {self.count('evaluated')} evaluated, "
                f"{self.count('failed')} failed")
