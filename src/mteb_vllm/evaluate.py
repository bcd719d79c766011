"""Evaluate tasks in this process, one by one, resuming what is already done.

Why not one ``mteb.evaluate(model, tasks)`` call: a run of a 40-task benchmark takes hours, and it must be
possible to kill it and start it again without redoing finished tasks, to see which tasks were already done,
and to keep the results of the tasks that worked when one task's dataset fails. mteb's "only-missing"
strategy does the resuming; this loop adds the per-task outcome, the per-task error record, and the re-run of
a task the wrapper stopped because its precision changed in the middle (:class:`~mteb_vllm.errors.
PrecisionChangedError`, see :class:`~mteb_vllm.precision.PrecisionGuard`), so no task's scores mix two
precisions.

:func:`run_serial` is what a run in this process does and what each worker process does with the tasks it is
handed (:mod:`mteb_vllm.workers`); :func:`mteb_vllm.runner.run_tasks` chooses between the two.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .outcomes import TaskOutcome

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

logger = logging.getLogger(__name__)


def results_cache(output_folder: str | Path | None) -> Any:
    """mteb's ``ResultCache`` for ``output_folder``, or None when no files are kept."""
    from mteb.cache import ResultCache

    return ResultCache(str(output_folder)) if output_folder is not None else None


def completed_result(cache: Any, task: AbsTask, meta: Any) -> Any | None:
    """The saved result of ``task`` for ``meta`` when it covers every split and subset, else None.

    A file that cannot be read (a run killed while mteb wrote it) is moved aside with a warning, so the task is
    evaluated again instead of failing on it.
    """
    try:
        existing = cache.load_task_result(task.metadata.name, meta)
    except Exception as exc:
        path = cache.get_task_result_path(task.metadata.name, meta)
        if path.exists():
            aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
            path.rename(aside)
            logger.warning("%s: the saved result %s cannot be read (%s); moved it to %s and evaluating the task "
                           "again", task.metadata.name, path, exc, aside.name)
        return None
    if existing is None:
        return None
    try:
        missing = existing.get_missing_evaluations(task)
    except Exception:
        return None
    if missing:
        return None
    if _is_nan(_score(existing)):  # degenerate vectors gave no score: not a result, evaluate the task again
        path = cache.get_task_result_path(task.metadata.name, meta)
        aside = path.with_name(f"{path.name}.invalid-{int(time.time())}")
        try:
            path.rename(aside)
        except OSError as exc:  # a read-only results folder: evaluated again, and reported failed if still NaN
            logger.warning("%s: the saved result %s has no valid main score (NaN) and cannot be moved aside (%s)",
                           task.metadata.name, path, exc)
            return None
        logger.warning("%s: the saved result %s has no valid main score (NaN); moved it to %s and evaluating the "
                       "task again", task.metadata.name, path, aside.name)
        return None
    return existing


def done_before(model: Any, tasks: list[AbsTask], cache: Any, *, overwrite: bool = False,
                on_task: Any = None) -> tuple[dict[str, TaskOutcome], list[AbsTask]]:
    """The "done before" outcomes of tasks whose saved results under the model's meta are complete (none with
    ``overwrite`` or without a results folder), and the tasks still to evaluate, in order."""
    done: dict[str, TaskOutcome] = {}
    missing: list[AbsTask] = []
    meta = model.mteb_model_meta
    for task in tasks:
        existing = completed_result(cache, task, meta) if cache and not overwrite else None
        if existing is None:
            missing.append(task)
            continue
        done[task.metadata.name] = TaskOutcome(task.metadata.name, task.metadata.main_score, "done before",
                                               _score(existing), dtype=dtype_of(model))
        if on_task is not None:
            on_task(done[task.metadata.name])
    return done, missing


def run_serial(model: Any, tasks: list[AbsTask], *, output_folder: str | Path | None = None,
               overwrite: bool = False, show_progress_bar: bool = True, stop_on_error: bool = False,
               on_task: Any = None) -> dict[str, TaskOutcome]:
    """Evaluate ``tasks`` here, one by one, after settling the model's precision; tasks done before are reported
    as such. Returns every task's outcome by name (arguments: see :func:`mteb_vllm.runner.run_tasks`)."""
    cache = results_cache(output_folder)
    from .precision import settle
    from .wrapper import VllmWrapperBase

    if isinstance(model, VllmWrapperBase):
        settle(model)  # the precision is settled before results are looked up under it
    outcomes, missing = done_before(model, tasks, cache, overwrite=overwrite, on_task=on_task)
    from .backends.cached import refreshing

    with refreshing(overwrite):  # --overwrite trusts no saved vector either (README, "The cache")
        for task in missing:
            outcome = _run_one(model, task, cache, overwrite, show_progress_bar, stop_on_error)
            outcomes[task.metadata.name] = outcome
            if on_task is not None:
                on_task(outcome)
    return outcomes


def _run_one(model: Any, task: AbsTask, cache: Any, overwrite: bool, progress: bool,
             stop_on_error: bool) -> TaskOutcome:
    import mteb

    name, metric = task.metadata.name, task.metadata.main_score
    started = time.perf_counter()
    before = _cache_counts(model)
    try:
        outcome = _evaluate_one(mteb, model, task, cache, overwrite, progress)
    except Exception as exc:
        if stop_on_error or isinstance(exc, _fatal_errors()):
            raise
        logger.error("%s failed: %s: %s", name, type(exc).__name__, exc)
        logger.debug("traceback", exc_info=True)
        outcome = TaskOutcome(name, metric, "failed", error=f"{type(exc).__name__}: {exc}")
    outcome.seconds = time.perf_counter() - started
    outcome.dtype = dtype_of(model)
    after = _cache_counts(model)
    if before is not None and after is not None:
        if after[0] < before[0] or after[1] < before[1]:  # the backend was replaced (a precision change)
            before = (0, 0)
        outcome.cached, outcome.computed = after[0] - before[0], after[1] - before[1]
    return outcome


def _cache_counts(model: Any) -> tuple[int, int] | None:
    """(cached, computed) so far, when the model is one of our wrappers and its backend is the embedding cache."""
    from .wrapper import VllmWrapperBase

    stats = model.backend.stats if isinstance(model, VllmWrapperBase) else None
    if stats is None:
        return None
    return stats.cached, stats.computed


def _fatal_errors() -> tuple[type[BaseException], ...]:
    """Errors that would fail every later task the same way (the engine or the model, not this task's data):
    the run stops at the first one instead of repeating it for every remaining task."""
    from .errors import EngineStartError, ModelNotFoundError, NonFiniteOutputError

    return (ImportError, MemoryError, EngineStartError, ModelNotFoundError, NonFiniteOutputError)


def _evaluate_one(mteb: Any, model: Any, task: AbsTask, cache: Any, overwrite: bool, progress: bool) -> TaskOutcome:
    from .errors import PrecisionChangedError

    strategy = "always" if overwrite else "only-missing"
    try:
        result = mteb.evaluate(model, task, cache=cache, overwrite_strategy=strategy, show_progress_bar=progress)
    except PrecisionChangedError as exc:
        # The wrapper stopped the task before any of its scores mixed two precisions, and the model's meta now
        # names the new precision: the task is looked up and filed under it, so evaluating it again is all.
        logger.warning("%s: the precision changed from %s to %s during the task; evaluating it again so all of "
                       "its scores come from %s", task.metadata.name, exc.previous, exc.current, exc.current)
        result = mteb.evaluate(model, task, cache=cache, overwrite_strategy=strategy, show_progress_bar=progress)
    if result.exceptions:
        raise RuntimeError(str(result.exceptions[0]))
    score = _score(result.task_results[0])
    if _is_nan(score):  # the next run evaluates it again (completed_result), so do not report it as done
        raise RuntimeError(f"the main score ({task.metadata.main_score}) is NaN: the model's outputs are "
                           "degenerate for this task (all equal, zero or not finite)")
    return TaskOutcome(task.metadata.name, task.metadata.main_score, "evaluated", score)


def _score(task_result: Any) -> float | None:
    try:
        return float(task_result.get_score())
    except Exception:
        return None


def _is_nan(score: float | None) -> bool:
    """A NaN main score (constant, zero or non-finite vectors) is never a complete result."""
    return score is not None and math.isnan(score)


def dtype_of(model: Any) -> str:
    """The precision a model computes in, for outcomes and summaries ("n/a" when it does not say)."""
    return str(getattr(model, "dtype", None) or (getattr(model.mteb_model_meta, "experiment_kwargs", None) or {})
               .get("dtype", "n/a"))
