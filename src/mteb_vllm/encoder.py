"""``VllmEncoderWrapper``: mteb's encoder protocol on a vLLM embedding engine (or any other backend)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from mteb.models.abs_encoder import AbsEncoder

from .backends.base import TokenizedInput
from .base import VllmWrapperBase
from .errors import EngineArgumentError, PromptReplayError
from .gc_pause import frozen_heap, paused_gc
from .prompts import Prompt, ReferencePromptReplay, reference_prompts
from .tokenizing import check_texts, tokenize_texts

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models import ModelMeta
    from mteb.types import PromptType
    from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)


@dataclass
class EncodeStats:
    """Running totals over every ``encode`` call, for progress reports and benchmarks."""

    calls: int = 0
    texts: int = 0
    unique_texts: int = 0
    tokens: int = 0
    truncated: int = 0
    seconds: float = 0.0


class VllmEncoderWrapper(AbsEncoder, VllmWrapperBase):
    """Embedding model on vLLM, usable wherever mteb takes a model: ``mteb.evaluate(wrapper, tasks)``.

    Prompts: with no prompt arguments, the prompt of every (task, subset, query/document) is the one
    mteb's reference loader for this model applies (``mteb.get_model(name)``), found by replaying that
    loader before the engine starts (see :mod:`mteb_vllm.prompts`); for models mteb does not know, the
    prompts in the model's ``config_sentence_transformers.json``. Explicit arguments replace that:

    Args:
        prompt_dict: Static prompts keyed like mteb's ``model_prompts`` ("query", "document", a task
            type, a task name, or "TaskName-query"), prepended to the text. With ``use_instructions``,
            instructions keyed the same way and formatted with ``instruction_template``.
        use_instructions: Treat ``prompt_dict`` values (or the task's own instruction) as instructions.
        instruction_template: "...{instruction}..." or a callable ``(instruction, prompt_type) -> str``.
        apply_instruction_to_documents: With instructions, also prefix documents.
        ignore_prompt_errors: When mteb's reference loader cannot be replayed, evaluate without prompts
            instead of raising :class:`~mteb_vllm.errors.PromptReplayError`. Scores may then differ from the
            reference: the opt-out exists for models whose reference needs more than this machine has.
        **engine_args: See :class:`~mteb_vllm.base.VllmWrapperBase`.
    """

    convert = "embed"

    def __init__(
        self,
        model: str | ModelMeta,
        revision: str | None = None,
        *,
        prompt_dict: dict[str, str] | None = None,
        use_instructions: bool = False,
        instruction_template: str | Callable[[str, PromptType | None], str] | None = None,
        apply_instruction_to_documents: bool = True,
        ignore_prompt_errors: bool = False,
        **engine_args: Any,
    ):
        if use_instructions and instruction_template is None:
            raise EngineArgumentError(
                "use_instructions=True needs an instruction_template, e.g. 'Instruct: {instruction}\\nQuery: '")
        if isinstance(instruction_template, str) and "{instruction}" not in instruction_template:
            raise EngineArgumentError("instruction_template must contain '{instruction}'")
        if prompt_dict is not None and not use_instructions:
            prompt_dict = self.validate_task_to_prompt_name(prompt_dict)
        self.prompts_dict = prompt_dict if use_instructions else None
        self.model_prompts = None if use_instructions else prompt_dict
        self.use_instructions = use_instructions
        self.instruction_template = instruction_template
        self.apply_instruction_to_documents = apply_instruction_to_documents
        self.ignore_prompt_errors = ignore_prompt_errors
        self._explicit_prompts = prompt_dict is not None or use_instructions or instruction_template is not None
        self._reference: ReferencePromptReplay | None = None
        self._prompts_dropped = False  # the registry's prompts could not be replayed and are knowingly left out
        self._embed_dim: int | None = None
        self.stats = EncodeStats()
        super().__init__(model, revision, **engine_args)

    def _prepare(self) -> None:
        """Replay mteb's reference loader before the engine starts, so a model whose prompts cannot be known
        fails in seconds instead of after the engine start."""
        if self._explicit_prompts:
            return
        try:
            with paused_gc():  # imports sentence-transformers and builds the reference loader
                self._reference = reference_prompts(self.registry_meta, self.model_path, self.resolved.revision)
        except PromptReplayError as exc:
            if not self.ignore_prompt_errors:
                raise
            logger.warning("%s; evaluating without prompts (ignore_prompt_errors=True; the results are filed "
                           "apart, under prompts=none)", exc)
            self._prompts_dropped = True

    def _experiment_kwargs(self) -> dict[str, Any]:
        """Prompts that are not the registry's are part of a run's identity: ``prompts="none"`` when the
        registry's could not be replayed and were left out, ``prompts="custom-<hash>"`` for the caller's own."""
        extra = super()._experiment_kwargs()
        if self._prompts_dropped:
            extra["prompts"] = "none"
        elif self._explicit_prompts:
            spec = json.dumps([self.model_prompts, self.prompts_dict, self.use_instructions,
                               self.instruction_template if isinstance(self.instruction_template, str) else
                               repr(self.instruction_template), self.apply_instruction_to_documents],
                              sort_keys=True, default=repr)
            extra["prompts"] = "custom-" + hashlib.sha256(spec.encode()).hexdigest()[:8]
        return extra

    # --- prompts -------------------------------------------------------------------------------------
    def resolve_prompt(self, task_metadata: TaskMetadata, prompt_type: PromptType | None,
                       hf_subset: str = "default", hf_split: str = "test") -> Prompt:
        """The prefix/suffix applied to inputs of this task, side and subset (see class docstring)."""
        from mteb.types import PromptType as PT

        if not self._explicit_prompts:
            if self._reference is None:
                return Prompt()
            try:
                return self._reference(task_metadata, prompt_type, hf_subset, hf_split)
            except Exception as exc:
                error = PromptReplayError(
                    f"mteb's reference loader for {self.mteb_model_meta.name} failed to give the prompt of "
                    f"{task_metadata.name} ({type(exc).__name__}: {exc}). Pass prompt_dict=... to set it, or "
                    "ignore_prompt_errors=True to evaluate without it (scores may differ from the reference).")
                if not self.ignore_prompt_errors:
                    raise error from exc
                logger.warning("%s", error)
                return Prompt()
        if self.use_instructions or self.instruction_template is not None:
            if prompt_type == PT.document and not self.apply_instruction_to_documents:
                return Prompt()
            return Prompt(self.get_task_instruction(task_metadata, prompt_type) or "")
        name = self.get_prompt_name(task_metadata, prompt_type)
        return Prompt(self.model_prompts.get(name, "") if (name and self.model_prompts) else "")

    # --- mteb protocol -------------------------------------------------------------------------------
    def encode(
        self,
        inputs: DataLoader,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """All texts of the call go to the engine at once; duplicates are encoded once.

        Returns float32 [n, dim] in input order (also for n = 0). Raises NonFiniteOutputError on NaN/Inf.
        """
        started = time.perf_counter()
        self._check_task_name(task_metadata)
        texts = self._texts(inputs)
        prompt = self.resolve_prompt(task_metadata, prompt_type, hf_subset, hf_split)
        if prompt.prefix or prompt.suffix:
            logger.info("%s %s: prompt %r ... %r", task_metadata.name, prompt_type, prompt.prefix, prompt.suffix)
        full = [prompt.apply(t) for t in texts]
        show = kwargs.get("show_progress_bar", True)
        embeddings = self.embed_texts(
            full, desc=f"{task_metadata.name} ({prompt_type.value if prompt_type else 'text'})" if show else "",
            task=task_metadata.name)
        self.stats.seconds += time.perf_counter() - started
        return embeddings

    def embed_texts(self, texts: list[str], *, desc: str = "", task: str | None = None) -> np.ndarray:
        """Embed final strings (prompts already applied): check, dedup, tokenize/truncate, pool, check.

        ``task``: the mteb task the texts belong to, so a precision fallback never mixes two precisions in one
        task's scores (see :meth:`~mteb_vllm.base.VllmWrapperBase._pool_checked`).
        Returns float32 [len(texts), dim] in input order, also for an empty list.
        """
        texts = check_texts(list(texts), "text")
        if not texts:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        with frozen_heap():
            return self._embed(texts, desc, task)

    def _embed(self, texts: list[str], desc: str, task: str | None) -> np.ndarray:
        unique = list(dict.fromkeys(texts))
        position = {text: i for i, text in enumerate(unique)}
        tokens, report = tokenize_texts(self.backend.tokenizer, unique, self.backend.max_model_len)
        report.log("texts", self.mteb_model_meta.name)
        pooled = self._pool_checked(lambda: self.backend.pool(tokens, "embed", desc=desc), "embeddings", task)
        self._embed_dim = pooled.shape[1]
        self.stats.calls += 1
        self.stats.texts += len(texts)
        self.stats.unique_texts += len(unique)
        self.stats.tokens += sum(len(t) for t in tokens)
        self.stats.truncated += report.truncated
        return pooled[np.fromiter((position[t] for t in texts), dtype=np.int64, count=len(texts))]

    @property
    def embedding_dim(self) -> int:
        """Width of this model's embeddings (asked of the backend once, with a one-token input)."""
        if self._embed_dim is None:
            tokenizer = self.backend.tokenizer
            probe = [TokenizedInput(tokenize_texts(tokenizer, ["a"], self.backend.max_model_len)[0][0].token_ids)]
            self._embed_dim = int(self.backend.pool(probe, "embed").shape[1])
        return self._embed_dim
