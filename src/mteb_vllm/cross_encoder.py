"""``VllmCrossEncoderWrapper``: mteb's cross-encoder protocol (``predict``) on a vLLM classify engine.

Two kinds of rerankers share it. Sequence-classification cross-encoders (BERT / XLM-R, ms-marco-MiniLM,
bge-reranker) read ``[CLS] query [SEP] document [SEP]`` and their classifier head gives the score. LLM
rerankers (Qwen3-Reranker) read a prompt built by a :class:`~mteb_vllm.templates.ScoreTemplate` and score
from their "yes"/"no" logits; vLLM turns the LM head into that score head through ``hf_overrides``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import EngineArgumentError, MtebVllmError
from .process_state import frozen_heap
from .templates import ScoreTemplate, registry_template
from .tokenizing import check_texts, tokenize_templated
from .wrapper import VllmWrapperBase

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models import ModelMeta
    from mteb.types import PromptType

logger = logging.getLogger(__name__)


class VllmCrossEncoderWrapper(VllmWrapperBase):
    """Reranker on vLLM, usable in ``mteb.evaluate`` on reranking tasks and converted retrieval tasks.

    With no arguments, a model mteb knows is set up as mteb's reference loader sets it up: an LLM reranker
    whose loader has a template here (Qwen3-Reranker) gets that template, a plain cross-encoder gets the
    ``query_prefix`` / ``passage_prefix`` of its registry entry. Explicit arguments override.

    Args:
        query_prefix: Text put before every query (inside the template's ``{query}`` for LLM rerankers).
        document_prefix: Text put before every document.
        template: A :class:`ScoreTemplate` for an LLM reranker; ``None`` uses the registry's, if any.
        instruction: Instruction for the template when a query has none of its own (replaces the
            template's default).
        use_task_instructions: Fill the template's instruction from the task's own prompt
            (``task_metadata.prompt``) when the query carries no instruction. Off by default because
            the reference implementations do not do it; per-query instructions (the dataset's
            "instruction" column, as in instruction-following reranking tasks) are always used.
        **engine_args: See :class:`~mteb_vllm.wrapper.VllmWrapperBase`.
    """

    convert = "classify"

    def __init__(
        self,
        model: str | ModelMeta,
        revision: str | None = None,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        *,
        template: ScoreTemplate | None = None,
        instruction: str | None = None,
        use_task_instructions: bool = False,
        **engine_args: Any,
    ):
        if template is not None and not isinstance(template, ScoreTemplate):
            raise EngineArgumentError(f"template must be a mteb_vllm.ScoreTemplate, got {type(template).__name__}")
        self._template_arg = template
        self._query_prefix_arg = query_prefix
        self._document_prefix_arg = document_prefix
        self.instruction = instruction
        self.use_task_instructions = use_task_instructions
        self.pairs_scored = 0
        self.truncated = 0
        self.seconds = 0.0
        super().__init__(model, revision, **engine_args)

    def _prepare(self) -> None:
        """Template, or mteb's reference cross-encoder built over the stand-in (its prefixes, activation, label
        count and context length), and the checks that need them, before any engine starts."""
        from .errors import MissingScoreHeadError
        from .checkpoint import has_classifier_head

        meta = self.registry_meta
        self.template = self._template_arg if self._template_arg is not None else registry_template(meta)
        self._st = None
        self.query_prefix = self._query_prefix_arg or ""
        self.document_prefix = self._document_prefix_arg or ""
        if self.instruction is not None and self.template is None:
            raise EngineArgumentError(
                "instruction= needs an LLM reranker template (template=ScoreTemplate(...)); plain cross-encoders "
                "have no place for an instruction: use query_prefix instead"
            )
        if self.template is None and has_classifier_head(self.model_path, self.resolved.revision) is False:
            archs = ", ".join(_architectures(self.model_path, self.resolved.revision))
            raise MissingScoreHeadError(
                f"{self.resolved.name} has no classification head ({archs}), so it cannot score (query, document) "
                "pairs: it looks like an embedding model or a plain language model. Use VllmEncoderWrapper "
                "(CLI: mteb-vllm run) for embedding models; for an LLM reranker pass template=ScoreTemplate(...) "
                "(CLI: --template).")
        if self.template is None:
            self._build_reference(meta)

    def _build_reference(self, meta: Any) -> None:
        """mteb's reference for the model (its registry loader, else ``CrossEncoderWrapper``) over the
        ``CrossEncoder`` stand-in: sentence-transformers then decides the activation (from wherever its
        versions saved it), the label count, the context length and the pair tokenization."""
        from mteb.models.sentence_transformer_wrapper import CrossEncoderWrapper

        from .errors import UnsupportedModelError
        from .process_state import paused_gc
        from .reference import build_reference, model_files

        path = model_files(self.model_path, self.resolved.revision, self._backend_spec, self._backend_options)
        with paused_gc():
            reference = build_reference(meta, path, self.resolved.revision, cross_encoder=True,
                                        trust_remote_code=self.resolved.trust_remote_code)
        if not isinstance(reference.model, CrossEncoderWrapper):
            raise UnsupportedModelError(
                f"{self.resolved.name}: {reference.source} wraps its CrossEncoder in {type(reference.model).__name__}, "
                "whose scoring mteb-vllm does not reproduce; evaluate it with mteb.get_model(name)")
        self._reference = reference
        self._st = reference.st
        self._st.engine = self._score_rows
        self._softmax_two_labels = self._relevance_rule(reference.st)
        if self._query_prefix_arg is None:
            self.query_prefix = reference.model.query_prefix or ""
        if self._document_prefix_arg is None:
            self.document_prefix = reference.model.passage_prefix or ""
        if self.config.max_model_len is not None:
            self._st.max_length = self.config.max_model_len

    def _relevance_rule(self, st: Any) -> bool:
        """How a relevance score comes out of ``CrossEncoder.predict``: one label, its output as it is (the saved
        activation applied). Two labels ([not relevant, relevant]) have no reference score (mteb's reranking
        fails on two numbers per pair, and ``CrossEncoder.rank`` refuses them), so mteb-vllm scores P(relevant):
        the softmax of the raw logits (activation Identity, the default), or the saved Softmax's second column.
        Any other head is refused here, before an engine starts. Returns whether predict must apply the softmax."""
        import torch

        from .errors import UnsupportedModelError

        labels, activation = int(st.num_labels), st.activation_fn
        if labels == 1:
            return False
        if labels == 2 and isinstance(activation, (torch.nn.Identity, torch.nn.Softmax)):
            return isinstance(activation, torch.nn.Identity)
        raise UnsupportedModelError(
            f"{self.resolved.name}: a cross-encoder with {labels} labels and activation {activation!r} gives no single "
            "relevance score (mteb's reranking needs one per pair); mteb-vllm scores one label, or two labels as "
            "P(relevant) from raw logits or a saved Softmax")

    def _engine_settings(self) -> dict[str, Any]:
        """A sentence-transformers cross-encoder: raw logits from the engine (sentence-transformers applies the
        activation it saved), the context length sentence-transformers truncates at."""
        if self._st is None:
            return {}
        from .checkpoint import context_length

        if self.config.pooler_config is not None:
            raise EngineArgumentError("pooler_config= would replace the cross-encoder's scoring, which mteb-vllm "
                                      "reproduces from its files; drop it")
        length = context_length(self.model_path, self.resolved.revision, requested=self.config.max_model_len,
                                reference=self._st)
        return {"max_model_len": length,
                "pooler_config": {"task": "classify", "use_activation": False},
                "output_modules": f"CrossEncoder activation {self._st.activation_fn!r}, {self._st.num_labels} labels"}

    def _score_template(self) -> ScoreTemplate | None:
        return self.template

    # --- mteb protocol -------------------------------------------------------------------------------
    def predict(
        self,
        inputs1: Any,
        inputs2: Any,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """One relevance score per (inputs1[i], inputs2[i]) pair, float32, in input order."""
        self._check_task_name(task_metadata)
        queries = self._texts(inputs1, "query")
        documents = self._texts(inputs2, "document")
        instructions = _instructions(inputs1, len(queries))
        if self.template is not None and self.use_task_instructions:
            task_instruction = _task_instruction(task_metadata)
            instructions = [i if i else task_instruction for i in instructions]
        show = kwargs.get("show_progress_bar", True)
        return self.score_pairs(queries, documents, instructions, desc=f"{task_metadata.name} (pairs)" if show else "",
                                task=task_metadata.name)

    def score_pairs(self, queries: list[str], documents: list[str], instructions: list[str | None] | None = None,
                    *, desc: str = "", task: str | None = None) -> np.ndarray:
        """Score final (query, document) strings; prefixes and the template are applied here. ``task``: the mteb
        task the pairs belong to (a precision fallback then never mixes two precisions in its scores)."""
        started = time.perf_counter()
        if len(queries) != len(documents):
            raise MtebVllmError(
                f"{self.mteb_model_meta.name}: got {len(queries)} queries but {len(documents)} documents; "
                "a cross-encoder scores pairs, so both sides must have the same length"
            )
        check_texts(list(queries), "query")
        check_texts(list(documents), "document")
        if instructions is None:
            instructions = [None] * len(queries)
        elif len(instructions) != len(queries):
            raise MtebVllmError(f"got {len(instructions)} instructions for {len(queries)} queries")
        if not queries:
            return np.zeros(0, dtype=np.float32)
        with frozen_heap():
            return self._score(queries, documents, instructions, desc, started, task)

    def _score(self, queries: list[str], documents: list[str], instructions: list[str | None], desc: str,
               started: float, task: str | None) -> np.ndarray:
        if self._st is not None:
            return self._score_st(queries, documents, desc, started, task)
        fallback = self.instruction
        # only a missing instruction takes the default, as mteb's Qwen3RerankerWrapper does; "" stays ""
        triples = [(fallback if instr is None else instr, self.query_prefix + q, self.document_prefix + d)
                   for instr, q, d in zip(instructions, queries, documents)]
        unique = list(dict.fromkeys(triples))
        position = {t: i for i, t in enumerate(unique)}
        tokenizer, max_len = self.backend.tokenizer, self.backend.max_model_len
        tokens, report = tokenize_templated(tokenizer, self.template, [t[1] for t in unique],
                                            [t[2] for t in unique], [t[0] for t in unique], max_len)
        report.log("pairs", self.mteb_model_meta.name)
        pooled = self._pool_checked(lambda: self.backend.pool(tokens, "classify", desc=desc), "scores", task)
        scores = self._to_scores(pooled)
        self.pairs_scored += len(unique)
        self.truncated += report.truncated
        self.seconds += time.perf_counter() - started
        return scores[np.fromiter((position[t] for t in triples), dtype=np.int64, count=len(triples))]

    def _score_st(self, queries: list[str], documents: list[str], desc: str, started: float,
                  task: str | None) -> np.ndarray:
        """A sentence-transformers cross-encoder: ``CrossEncoder.predict`` on the prefixed pairs, its forward in
        the engine (:meth:`_score_rows`)."""
        pairs = [(self.query_prefix + q, self.document_prefix + d) for q, d in zip(queries, documents)]
        self._desc, self._task = desc, task
        try:
            # two labels: P(relevant), see _relevance_rule
            scores = np.asarray(self._st.predict(pairs, convert_to_numpy=True,
                                                 apply_softmax=self._softmax_two_labels), dtype=np.float32)
        finally:
            self._desc, self._task = "", None
        self.seconds += time.perf_counter() - started
        return self._to_scores(scores)

    def _score_rows(self, rows: list[Any]) -> np.ndarray:
        """One sentence-transformers batch of pairs (token and segment ids as it tokenized them) through the backend
        stack: raw logits [rows, labels], duplicates computed once."""
        report = self._st.transformer.take_truncation()
        report.log("pairs", self.mteb_model_meta.name)
        keys = [(tuple(r.token_ids), tuple(r.token_type_ids or ())) for r in rows]
        position: dict[tuple, int] = {}
        unique = []
        for key, row in zip(keys, rows):
            if key not in position:
                position[key] = len(unique)
                unique.append(row)
        logits = self._pool_checked(lambda: self.backend.pool(unique, "classify", desc=getattr(self, "_desc", "")),
                                    "scores", getattr(self, "_task", None))
        self.pairs_scored += len(unique)
        self.truncated += report.truncated
        return logits[np.fromiter((position[k] for k in keys), dtype=np.int64, count=len(keys))]

    def _to_scores(self, pooled: np.ndarray) -> np.ndarray:
        if pooled.ndim == 1 or pooled.shape[1] == 1:
            return pooled.reshape(-1).astype(np.float32, copy=False)
        if pooled.shape[1] == 2:
            # two-label classifiers (not relevant / relevant): the "relevant" column of what CrossEncoder.predict
            # returns (with the saved activation), or of vLLM's softmax for a template-free engine
            return pooled[:, 1].astype(np.float32, copy=False)
        raise MtebVllmError(
            f"{self.mteb_model_meta.name} has {pooled.shape[1]} output labels; a reranker needs one relevance "
            "score. For a causal LM reranker pass template=ScoreTemplate(...) to score from token logits."
        )


def _architectures(model: str, revision: str | None) -> list[str]:
    from .checkpoint import architectures

    return architectures(model, revision) or ["unknown architecture"]


def _instructions(inputs: Any, n: int) -> list[str | None]:
    """Per-query instructions from the dataset's "instruction" column (as mteb's reference reads them)."""
    found: list[str | None] = []
    for batch in inputs:
        if isinstance(batch, dict) and "instruction" in batch:
            found.extend(batch["instruction"])
        else:
            found.extend([None] * len(batch["text"]))
    return found if len(found) == n else [None] * n


def _task_instruction(task_metadata: TaskMetadata) -> str | None:
    prompt = getattr(task_metadata, "prompt", None)
    if isinstance(prompt, str):
        return prompt or None
    if isinstance(prompt, dict):
        return prompt.get("query") or None
    return None
