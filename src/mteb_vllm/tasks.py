"""Task lookup for every entry point: names, benchmarks and this package's demo tasks, in one place.

Why here and not in ``demo``: ``mteb.get_task`` does not know the demo tasks, and the CLI, ``rerank()``,
parity, the workers and the shards all need the same answer to "which tasks are these names".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import check_path_name
from .errors import UsageError

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask


class TaskSelectionError(UsageError, KeyError):
    """A task or benchmark name that mteb does not know, or a selection that makes no sense."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def get_tasks(names: list[str]) -> list[AbsTask]:
    """Fresh task objects for task names, in order: this package's demo tasks by name, the rest from mteb.

    Unknown names raise :class:`TaskSelectionError` with mteb's "did you mean" for each.
    """
    import mteb

    from .demo import DEMO_TASK_CLASSES

    out, unknown = [], []
    for name in names:
        if name in DEMO_TASK_CLASSES:
            out.append(DEMO_TASK_CLASSES[name]())
            continue
        try:
            out.append(mteb.get_task(name))
        except KeyError as exc:
            unknown.append(str(exc.args[0]) if exc.args else name)
    if unknown:
        raise TaskSelectionError("unknown task(s): " + "; ".join(m.removeprefix("KeyError: ") for m in unknown))
    for task in out:
        check_path_name(task.metadata.name, "task name", slash=False)
    return out


def select_tasks(names: list[str] | None = None, benchmark: str | None = None) -> list[AbsTask]:
    """The tasks of a run: ``names``, a ``benchmark``'s tasks (filtered to ``names`` when both are given), or
    the bundled demo tasks when neither is."""
    import mteb

    from .demo import demo_tasks

    if benchmark:
        try:
            tasks = list(mteb.get_benchmark(benchmark).tasks)
        except KeyError as exc:
            raise TaskSelectionError(f"unknown benchmark: {exc.args[0] if exc.args else benchmark}") from None
        if names:
            wanted = set(names)
            in_benchmark = {t.metadata.name for t in tasks}
            missing = sorted(wanted - in_benchmark)
            if missing:
                raise TaskSelectionError(
                    f"task(s) {', '.join(missing)} are not part of {benchmark}; --tasks with --benchmark selects "
                    f"tasks of the benchmark (it has {len(in_benchmark)}: see mteb.get_benchmark({benchmark!r}))")
            tasks = [t for t in tasks if t.metadata.name in wanted]
        for task in tasks:
            check_path_name(task.metadata.name, "task name", slash=False)
        return tasks
    if not names:
        return demo_tasks()
    return get_tasks(list(names))


def task_cost(task: Any) -> float:
    """A task's relative evaluation cost, for ordering and splitting: the characters it encodes, from mteb's
    descriptive statistics (shipped with mteb, no download), else its sample count, else 1."""
    stats = getattr(task.metadata, "descriptive_stats", None) or {}
    chars = 0.0
    samples = 0.0
    for split in getattr(task.metadata, "eval_splits", None) or list(stats):
        split_stats = stats.get(split) or {}
        chars += float(split_stats.get("number_of_characters") or 0)
        samples += float(split_stats.get("num_samples") or 0)
    if chars:
        return chars
    if samples:
        return samples * 100.0
    return 1.0


def order_by_cost(tasks: list[Any]) -> list[Any]:
    """Largest first (ties by name): handed out in this order, the longest task never starts last."""
    return sorted(tasks, key=lambda t: (-task_cost(t), t.metadata.name))


def parse_shard(text: str) -> tuple[int, int]:
    """"i/N" (0-based i) -> (i, N), refusing anything else with a message that shows the form."""
    index, sep, count = str(text).partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit() or int(count) < 1 \
            or int(index) >= int(count):
        raise TaskSelectionError(f"--shard takes i/N with 0 <= i < N (e.g. 0/4 ... 3/4 for four jobs), got {text!r}")
    return int(index), int(count)


def shard_tasks(tasks: list[Any], index: int, count: int) -> list[Any]:
    """Shard ``index`` of ``count`` of a task list: a deterministic, cost-balanced split.

    Why: SLURM arrays and Kubernetes indexed jobs start N independent drivers with nothing but their index;
    each must compute the same split from the same task list, with shards of about equal work. Tasks are
    dealt largest first, each to the shard with the least work so far (ties to the lowest index), so any N
    gives disjoint shards that cover the list, whatever order the list came in.
    """
    if not 0 <= index < count:
        raise TaskSelectionError(f"shard {index} of {count} does not exist (0 <= i < N)")
    loads = [0.0] * count
    mine = []
    for task in order_by_cost(tasks):
        target = min(range(count), key=lambda s: (loads[s], s))
        loads[target] += task_cost(task)
        if target == index:
            mine.append(task)
    return mine
