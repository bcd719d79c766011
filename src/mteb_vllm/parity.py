"""``mteb-vllm parity``: the same tasks through mteb's reference path and through our wrappers, compared.

Why: "many model implementations have subtle differences" (a missing prompt, a different pooling, a
truncation side) and they show up as small score shifts nobody notices. This runs the reference the way
``mteb.get_model`` would build it (the registry loader, or sentence-transformers for unknown models) and
ours on the same weights, then reports per task the main-score delta and per input the embedding cosine
or the score difference, every call of the task lined up with its twin.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Documents per query a cross-encoder reranks when parity runs it on a retrieval task.
PARITY_TOP_K = 20


@dataclass
class TaskParity:
    task: str
    metric: str
    reference: float
    ours: float
    delta: float
    within_tolerance: bool
    #: encoders: min and mean cosine between our and the reference embedding of every input
    min_cosine: float | None = None
    mean_cosine: float | None = None
    #: cross-encoders: largest and mean absolute score difference
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    inputs_compared: int = 0


@dataclass
class ParityReport:
    model: str
    kind: str
    dtype: str
    tolerance: float
    tasks: list[TaskParity] = field(default_factory=list)

    @property
    def failed(self) -> list[TaskParity]:
        return [t for t in self.tasks if not t.within_tolerance]

    def markdown(self) -> str:
        lines = [f"# Parity: {self.model} ({self.kind}, {self.dtype}), tolerance {self.tolerance:g}", "",
                 "| task | metric | reference | ours | delta | per input | ok |", "|---|---|---:|---:|---:|---|---|"]
        for t in self.tasks:
            if t.min_cosine is not None:
                per = f"cosine min {t.min_cosine:.6f}, mean {t.mean_cosine:.6f} ({t.inputs_compared} inputs)"
            elif t.max_abs_diff is not None:
                per = f"|diff| max {t.max_abs_diff:.2e}, mean {t.mean_abs_diff:.2e} ({t.inputs_compared} pairs)"
            else:
                per = "n/a"
            lines.append(f"| {t.task} | {t.metric} | {t.reference:.5f} | {t.ours:.5f} | {t.delta:+.2e} | {per} | "
                         f"{'yes' if t.within_tolerance else '**NO**'} |")
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "failed": [t.task for t in self.failed]}, indent=2)


def is_cross_encoder(model_path: str, meta: Any) -> bool:
    """A reranker when mteb's registry says so or the checkpoint is a sequence classifier."""
    from .templates import registry_template

    if meta is not None and (getattr(meta, "is_cross_encoder", False) or registry_template(meta) is not None):
        return True
    config = Path(model_path) / "config.json"
    if config.exists():
        archs = json.loads(config.read_text()).get("architectures") or []
        return any(a.endswith("ForSequenceClassification") for a in archs)
    return False


def reference_model(model_path: str, meta: Any, cross_encoder: bool, revision: str | None = None,
                    trust_remote_code: bool = False) -> Any:
    """mteb's reference implementation on the same weights, in float32: what ``mteb.get_model`` builds (the registry
    loader, else mteb's sentence-transformers wrapper), built by the same code that builds ours
    (:func:`~mteb_vllm.reference.build_reference`), with sentence-transformers' real classes. LLM rerankers with a
    score template: mteb's own loader as it is."""
    from .reference import build_reference
    from .templates import registry_template

    if cross_encoder and meta is not None and registry_template(meta) is not None:
        kwargs = {**dict(meta.loader_kwargs or {}), **dict(meta.experiment_kwargs or {})}
        return meta.loader(model_path, revision=meta.revision, **kwargs)
    return build_reference(meta, model_path, revision, cross_encoder=cross_encoder,
                           trust_remote_code=trust_remote_code, engine=False).model


def _record(model: Any, method: str, sink: list[np.ndarray]) -> None:
    """Keep every output of ``model.<method>`` (mteb calls both models in the same order)."""
    inner = getattr(model, method)

    def recorded(*args: Any, **kwargs: Any) -> Any:
        out = inner(*args, **kwargs)
        sink.append(np.asarray(out, dtype=np.float32).copy())
        return out

    setattr(model, method, recorded)


def _compare(kind: str, ref: list[np.ndarray], ours: list[np.ndarray]) -> dict[str, Any]:
    pairs = [(r, o) for r, o in zip(ref, ours) if r.shape == o.shape and r.size]
    if not pairs:
        return {}
    if kind == "encoder":
        r = np.concatenate([p[0].reshape(p[0].shape[0], -1) for p in pairs])
        o = np.concatenate([p[1].reshape(p[1].shape[0], -1) for p in pairs])
        cos = (r * o).sum(1) / np.maximum(np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1), 1e-12)
        return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()), "inputs_compared": len(cos)}
    diff = np.abs(np.concatenate([p[0].ravel() - p[1].ravel() for p in pairs]))
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "inputs_compared": len(diff)}


def run_parity(model: str | None = None, *, model_name: str | None = None, tasks: Any = None, dtype: str = "float32",
               tolerance: float = 1e-3, prompt_dict: dict[str, str] | None = None,
               engine_args: dict[str, Any] | None = None) -> ParityReport:
    """Evaluate ``tasks`` with the reference and with our wrapper; see the module docstring.

    ``prompt_dict`` applies to our side only: the way to check a prompt configuration against the reference.
    """
    import mteb

    from .defaults import DEFAULT_MODEL_NAME, default_model_path
    from .demo import DEMO_TASK_CLASSES
    from .resolve import registry_meta
    from .tasks import get_tasks

    if model is None:
        model, model_name = default_model_path(), model_name or DEFAULT_MODEL_NAME
    meta = registry_meta(model_name or model)
    cross = is_cross_encoder(model, meta)

    # Ours starts first: a bm25s first stage (below) loads modules that force vLLM out of its faster
    # in-process mode (see backends.local).
    if cross:
        from .cross_encoder import VllmCrossEncoderWrapper

        ours = VllmCrossEncoderWrapper(model, model_name=model_name, dtype=dtype, **dict(engine_args or {}))
    else:
        from .encoder import VllmEncoderWrapper

        ours = VllmEncoderWrapper(model, model_name=model_name, dtype=dtype, prompt_dict=prompt_dict,
                                  **dict(engine_args or {}))
    names = tasks or (["MtebVllmDemoRetrieval"] if cross else list(DEMO_TASK_CLASSES))
    names = [names] if isinstance(names, str) else list(names)
    predictions = tempfile.mkdtemp(prefix="mteb_vllm_parity_") if cross else None

    def fresh_tasks() -> list:
        out = get_tasks(names)
        if cross:  # retrieval tasks are reranked over the same bm25s top-k lists on both sides
            retrieval = [t for t in out if t.metadata.type == "Retrieval"]
            if retrieval and not any(Path(predictions).iterdir()):
                mteb.evaluate(mteb.get_model("bm25s"), retrieval, cache=None, prediction_folder=predictions,
                              show_progress_bar=False)
            for task in retrieval:
                task.convert_to_reranking(predictions, top_k=PARITY_TOP_K)
        return out

    method = "predict" if cross else "encode"
    ref_out: dict[str, list[np.ndarray]] = {}
    our_out: dict[str, list[np.ndarray]] = {}
    with ours:
        reference_tasks = fresh_tasks()
        ref_scores = _evaluate(reference_model(ours.model_path, meta, cross, ours.resolved.revision,
                                               ours.resolved.trust_remote_code), reference_tasks, method, ref_out)
        our_scores = _evaluate(ours, fresh_tasks(), method, our_out)
    report = ParityReport(model=model_name or model, kind="cross-encoder" if cross else "encoder", dtype=dtype,
                          tolerance=tolerance)
    for name, (metric, ref_value) in ref_scores.items():
        value = our_scores[name][1]
        delta = value - ref_value
        report.tasks.append(TaskParity(task=name, metric=metric, reference=ref_value, ours=value, delta=delta,
                                       within_tolerance=abs(delta) <= tolerance,
                                       **_compare("cross" if cross else "encoder", ref_out.get(name, []),
                                                  our_out.get(name, []))))
    return report


def _evaluate(model: Any, tasks: list, method: str, outputs: dict[str, list[np.ndarray]]) -> dict[str, tuple[str, float]]:
    """Evaluate task by task so every recorded output is filed under its task."""
    import mteb

    scores = {}
    for task in tasks:
        sink: list[np.ndarray] = []
        _record(model, method, sink)
        try:
            result = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
        finally:
            vars(model).pop(method, None)  # back to the class's method
        name = task.metadata.name
        outputs[name] = sink
        scores[name] = (task.metadata.main_score, float(result.task_results[0].get_score()))
    return scores
