"""Two small real mteb tasks over data files shipped in this package, for offline runs and tests.

``MtebVllmDemoSTS`` (40 sentence pairs, Spearman of cosine vs gold) and ``MtebVllmDemoRetrieval``
(18 queries over 30 short documents, nDCG@10). They load from ``demo/data/*.jsonl``, never the hub.
"""

from __future__ import annotations

import json
import os
from typing import Any

from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")

_COMMON: dict[str, Any] = dict(
    reference="https://github.com/embeddings-benchmark/mteb",
    dataset={"path": "mteb-vllm/demo", "revision": "1"},
    category="t2t",
    eval_splits=["test"],
    eval_langs=["eng-Latn"],
    date=("2026-11-01", "2026-11-22"),
    domains=["Written"],
    task_subtypes=[],
    license="apache-2.0",
    annotations_creators="expert-annotated",
    dialect=[],
    modalities=["text"],
    sample_creation="created",
    bibtex_citation="",
)


def _read_jsonl(name: str) -> list[dict[str, Any]]:
    with open(os.path.join(DATA_DIR, name), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


class MtebVllmDemoSTS(AbsTaskSTS):
    metadata = TaskMetadata(
        name="MtebVllmDemoSTS",
        description="40 English sentence pairs with similarity scores from 0 to 5, written for mteb-vllm's offline demo.",
        type="STS",
        main_score="cosine_spearman",
        **_COMMON,
    )
    min_score = 0
    max_score = 5

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset, DatasetDict

        rows = _read_jsonl("sts.jsonl")
        self.dataset = DatasetDict({"test": Dataset.from_list(rows)})
        self.data_loaded = True


class MtebVllmDemoRetrieval(AbsTaskRetrieval):
    metadata = TaskMetadata(
        name="MtebVllmDemoRetrieval",
        description="18 English questions over 30 encyclopedia-style passages, written for mteb-vllm's offline demo.",
        type="Retrieval",
        main_score="ndcg_at_10",
        **_COMMON,
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset
        from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

        queries = _read_jsonl("queries.jsonl")
        corpus = _read_jsonl("corpus.jsonl")
        split = RetrievalSplitData(
            queries=Dataset.from_list([{"id": q["id"], "text": q["text"]} for q in queries]),
            corpus=Dataset.from_list(corpus),
            relevant_docs={q["id"]: dict(q["relevant"]) for q in queries},
            top_ranked=None,
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


DEMO_TASK_CLASSES = {cls.metadata.name: cls for cls in (MtebVllmDemoSTS, MtebVllmDemoRetrieval)}


def demo_tasks(names: list[str] | None = None) -> list:
    """Fresh instances of the demo tasks (all of them when ``names`` is None)."""
    names = list(DEMO_TASK_CLASSES) if names is None else names
    return [DEMO_TASK_CLASSES[n]() for n in names]
