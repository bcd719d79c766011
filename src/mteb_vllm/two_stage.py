"""The two-stage run: a first-stage retriever writes its top-ranked lists, a cross-encoder reranks them.

This is mteb's documented recipe (``prediction_folder`` → ``task.convert_to_reranking(folder, top_k)`` →
evaluate the reranker) as one call, with the two things people get wrong handled here: engines are
started one after the other (a CPU box cannot hold a dense retriever and a reranker at 40 % of RAM each),
and both stages' scores are kept so the gain of reranking is visible.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MtebVllmError, UsageError

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask
    from mteb.results import TaskResult

logger = logging.getLogger(__name__)

BM25 = "bm25s"


@dataclass
class StageScores:
    """One task's main score after each stage."""

    task: str
    metric: str
    first_stage: float | None
    second_stage: float | None

    @property
    def delta(self) -> float | None:
        if self.first_stage is None or self.second_stage is None:
            return None
        return self.second_stage - self.first_stage


@dataclass
class RerankRun:
    """Results of both stages, in mteb's ``TaskResult`` form, and where the predictions went."""

    first_stage_model: str
    reranker_model: str
    top_k: int
    prediction_folder: Path
    first_stage: list[TaskResult] = field(default_factory=list)
    second_stage: list[TaskResult] = field(default_factory=list)
    main_scores: dict[str, str] = field(default_factory=dict)

    def scores(self) -> list[StageScores]:
        first = {r.task_name: r for r in self.first_stage}
        rows = []
        for result in self.second_stage:
            metric = self.main_scores.get(result.task_name, "main_score")
            before = first.get(result.task_name)
            rows.append(StageScores(result.task_name, metric, before.get_score() if before else None,
                                    result.get_score()))
        return rows


def resolve_tasks(tasks: Any) -> list[AbsTask]:
    """Task names, task objects or None (the bundled retrieval demo) → fresh mteb task objects."""
    from mteb.abstasks import AbsTask

    from .demo import MtebVllmDemoRetrieval
    from .tasks import get_tasks

    if tasks is None:
        return [MtebVllmDemoRetrieval()]
    if isinstance(tasks, (str, AbsTask)):
        tasks = [tasks]
    resolved = [task if isinstance(task, AbsTask) else get_tasks([task])[0] for task in tasks]
    for task in resolved:
        if not hasattr(task, "convert_to_reranking"):
            raise UsageError(
                f"{task.metadata.name} is a {task.metadata.type} task; the two-stage run needs retrieval tasks "
                "(reranking tasks can be evaluated with the cross-encoder directly: mteb.evaluate(reranker, task))"
            )
    return resolved


def _first_stage_model(first_stage: Any, engine_args: dict[str, Any]) -> tuple[Any, bool]:
    """(model, owned): owned models are closed after the first stage to free memory for the reranker."""
    import mteb

    if not isinstance(first_stage, str):
        return first_stage, False
    if first_stage == BM25:
        try:
            import bm25s  # noqa: F401
            import Stemmer  # noqa: F401
        except ImportError as exc:
            raise MtebVllmError(
                f"the bm25s first stage needs bm25s and PyStemmer ({exc.name} is missing): "
                "pip install 'mteb-vllm[demo]' (or: pip install bm25s PyStemmer)"
            ) from exc
        return mteb.get_model(BM25), False
    from .encoder import VllmEncoderWrapper

    return VllmEncoderWrapper(first_stage, **engine_args), True


def _build_reranker(model: str, args: dict[str, Any] | None) -> Any:
    from .cross_encoder import VllmCrossEncoderWrapper

    return VllmCrossEncoderWrapper(model, **dict(args or {}))


def rerank(
    tasks: Any = None,
    reranker: Any = None,
    first_stage: Any = BM25,
    *,
    top_k: int = 100,
    output_folder: str | Path | None = None,
    prediction_folder: str | Path | None = None,
    first_stage_args: dict[str, Any] | None = None,
    reranker_args: dict[str, Any] | None = None,
    show_progress_bar: bool = True,
    overwrite_strategy: str = "always",
) -> RerankRun:
    """Retrieve with ``first_stage``, keep the ``top_k`` per query, rerank with ``reranker``.

    Args:
        tasks: mteb retrieval task names or objects; ``None`` runs the bundled retrieval demo task.
        reranker: A :class:`~mteb_vllm.VllmCrossEncoderWrapper` (or any mteb cross-encoder), or a model
            name/path to build one from (started after the first stage has released its memory).
        first_stage: ``"bm25s"``, an embedding model name/path (run through our ``VllmEncoderWrapper``),
            or any mteb search/encoder model object.
        top_k: Documents per query handed to the reranker.
        output_folder: mteb ``ResultCache`` folder for both stages' result files; ``None`` keeps no files.
        prediction_folder: Where the first stage writes its ranked lists (default: ``output_folder``/
            predictions, or a temporary folder).
        first_stage_args, reranker_args: Constructor arguments when a stage is given by name.
    """
    import mteb
    from mteb.cache import ResultCache

    if reranker is None:
        raise MtebVllmError("rerank() needs a reranker: a VllmCrossEncoderWrapper or a cross-encoder model name")
    if not isinstance(top_k, int) or top_k < 1:
        raise MtebVllmError(f"top_k must be a positive integer, got {top_k!r}")
    task_list = resolve_tasks(tasks)
    cache = ResultCache(str(output_folder)) if output_folder is not None else None
    if prediction_folder is None:
        prediction_folder = (Path(output_folder) / "predictions" if output_folder is not None
                             else Path(tempfile.mkdtemp(prefix="mteb_vllm_predictions_")))
    prediction_folder = Path(prediction_folder)
    prediction_folder.mkdir(parents=True, exist_ok=True)

    owned_reranker = isinstance(reranker, str)
    try:
        if owned_reranker:
            # Built before the first stage runs, so a reranker that cannot work (no score head, a bad
            # argument) fails in seconds, not after the retrieval. With bm25s the engine starts now, which
            # keeps it in-process: bm25s loads numba/llvmlite, and vLLM's in-process start cannot run with
            # those loaded (backends.local). After a dense first stage it starts at its first score, once
            # the first stage's engine is closed.
            args = dict(reranker_args or {})
            if first_stage != BM25 and not args.get("endpoints"):  # a fleet is checked now: it holds no memory here
                args.setdefault("lazy_start", True)
            reranker = _build_reranker(reranker, args)
        model, owned = _first_stage_model(first_stage, dict(first_stage_args or {}))
        first_name = model.mteb_model_meta.name if getattr(model, "mteb_model_meta", None) else str(first_stage)
        try:
            first = mteb.evaluate(model, task_list, cache=cache, prediction_folder=prediction_folder,
                                  overwrite_strategy=overwrite_strategy, show_progress_bar=show_progress_bar)
        finally:
            if owned:
                model.close()
        for task in task_list:
            task.convert_to_reranking(prediction_folder, top_k=top_k)
        second = mteb.evaluate(reranker, task_list, cache=cache, overwrite_strategy=overwrite_strategy,
                               show_progress_bar=show_progress_bar)
    finally:
        if owned_reranker and not isinstance(reranker, str):
            reranker.close()
    run = RerankRun(first_stage_model=first_name, reranker_model=reranker.mteb_model_meta.name, top_k=top_k,
                    prediction_folder=prediction_folder, first_stage=list(first.task_results),
                    second_stage=list(second.task_results),
                    main_scores={t.metadata.name: t.metadata.main_score for t in task_list})
    for row in run.scores():
        logger.info("%s %s: first stage %.4f, reranked %.4f", row.task, row.metric, row.first_stage or float("nan"),
                    row.second_stage or float("nan"))
    return run
