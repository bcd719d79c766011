"""``run_tasks``: evaluate a list of tasks with one model, here or on worker processes, resuming what is done.

The one dispatcher of a run: it settles what is already done, then evaluates the rest in this process
(:func:`mteb_vllm.evaluate.run_serial`) or hands it to worker processes (:func:`mteb_vllm.workers.run_parallel`,
each of which runs ``run_serial`` on the tasks it gets), and sums the outcomes up. Neither of those calls back
here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .evaluate import done_before, dtype_of, results_cache, run_serial
from .outcomes import RunSummary

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

logger = logging.getLogger(__name__)


def run_tasks(model: Any, tasks: list[AbsTask], *, output_folder: str | Path | None = None,
              overwrite: bool = False, show_progress_bar: bool = True, stop_on_error: bool = False,
              on_task: Any = None, workers: list[Any] | None = None,
              worker_kwargs: dict[str, Any] | None = None) -> RunSummary:
    """Evaluate ``tasks`` one by one with ``model`` (an mteb model, e.g. our wrappers).

    Args:
        output_folder: mteb ``ResultCache`` folder; ``None`` keeps no files (and resumes nothing).
        overwrite: Evaluate every task again (mteb's "always"), and compute its embeddings again instead of
            reading them from the embedding cache (they replace the cached ones); default resumes ("only-missing").
        stop_on_error: Raise the first task error instead of recording it and going on.
        on_task: Called with each :class:`TaskOutcome` as it is known (progress reporting).
        workers: :class:`~mteb_vllm.workers.WorkerPlan` per worker process; the missing tasks are then evaluated
            there (each builds its own wrapper from ``worker_kwargs``), and ``model`` only decides what is done.
    """
    from .config import check_path_name

    for task in tasks:  # before any path is built from them (a saved result is looked up, or moved aside)
        check_path_name(task.metadata.name, "task name", slash=False)
    if workers:  # this process only decides what is done; the workers settle their precision and compute
        from .workers import run_parallel

        outcomes, missing = done_before(model, tasks, results_cache(output_folder), overwrite=overwrite,
                                        on_task=on_task)
        if missing:
            for outcome in run_parallel(missing, workers, dict(worker_kwargs or {}), output_folder=output_folder,
                                        overwrite=overwrite, on_task=on_task):
                outcomes[outcome.task] = outcome
    else:
        outcomes = run_serial(model, tasks, output_folder=output_folder, overwrite=overwrite,
                              show_progress_bar=show_progress_bar, stop_on_error=stop_on_error, on_task=on_task)
    meta = model.mteb_model_meta
    return RunSummary(model=meta.name, revision=meta.revision, dtype=dtype_of(model),
                      output_folder=Path(output_folder) if output_folder is not None else None,
                      outcomes=[outcomes[t.metadata.name] for t in tasks])
