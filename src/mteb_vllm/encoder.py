"""``VllmEncoderWrapper``: mteb's encoder protocol on a vLLM embedding engine."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from mteb.models.abs_encoder import AbsEncoder

from .base import VllmWrapperBase
from .gc_pause import paused_gc
from .prompts import Prompt, reference_prompts
from .tokenize import tokenize_texts

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

    Prompts: with no prompt arguments, the prompt of every (task, query/document) pair is the one
    mteb's reference loader for this model applies (``mteb.get_model(name)``), found by replaying that
    loader (see :mod:`mteb_vllm.prompts`); for models mteb does not know, the prompts in the model's
    ``config_sentence_transformers.json``. Explicit arguments replace that:

    Args:
        prompt_dict: Static prompts keyed like mteb's ``model_prompts`` ("query", "document", a task
            type, a task name, or "TaskName-query"), prepended to the text. With ``use_instructions``,
            instructions keyed the same way and formatted with ``instruction_template``.
        use_instructions: Treat ``prompt_dict`` values (or the task's own instruction) as instructions.
        instruction_template: "...{instruction}..." or a callable ``(instruction, prompt_type) -> str``.
        apply_instruction_to_documents: With instructions, also prefix documents.
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
        **engine_args: Any,
    ):
        if use_instructions and instruction_template is None:
            raise ValueError("use_instructions=True needs an instruction_template, e.g. 'Instruct: {instruction}\\nQuery: '")
        if isinstance(instruction_template, str) and "{instruction}" not in instruction_template:
            raise ValueError("instruction_template must contain '{instruction}'")
        if prompt_dict is not None and not use_instructions:
            prompt_dict = self.validate_task_to_prompt_name(prompt_dict)
        self.prompts_dict = prompt_dict if use_instructions else None
        self.model_prompts = None if use_instructions else prompt_dict
        self.use_instructions = use_instructions
        self.instruction_template = instruction_template
        self.apply_instruction_to_documents = apply_instruction_to_documents
        self._explicit_prompts = prompt_dict is not None or use_instructions or instruction_template is not None
        super().__init__(model, revision, **engine_args)
        if self._explicit_prompts:
            self._reference = None
        else:
            with paused_gc():  # imports sentence-transformers and builds the reference loader
                self._reference = reference_prompts(self.registry_meta, self.model_path)
        self.stats = EncodeStats()

    # --- prompts -------------------------------------------------------------------------------------
    def resolve_prompt(self, task_metadata: TaskMetadata, prompt_type: PromptType | None) -> Prompt:
        """The prefix/suffix applied to inputs of this task and side (see class docstring)."""
        from mteb.types import PromptType as PT

        if not self._explicit_prompts:
            return self._reference(task_metadata, prompt_type) if self._reference else Prompt()
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

        Returns float32 [n, dim] in input order. Raises NonFiniteOutputError on NaN/Inf.
        """
        started = time.perf_counter()
        texts = self._texts(inputs)
        prompt = self.resolve_prompt(task_metadata, prompt_type)
        if prompt.prefix or prompt.suffix:
            logger.info("%s %s: prompt %r ... %r", task_metadata.name, prompt_type, prompt.prefix, prompt.suffix)
        full = [prompt.apply(t) for t in texts]
        embeddings = self.embed_texts(full, desc=f"{task_metadata.name} ({prompt_type.value if prompt_type else 'text'})"
                                      if kwargs.get("show_progress_bar", True) else "")
        self.stats.seconds += time.perf_counter() - started
        return embeddings

    def embed_texts(self, texts: list[str], *, desc: str = "") -> np.ndarray:
        """Embed final strings (prompts already applied): dedup, tokenize/truncate, pool, check."""
        unique = list(dict.fromkeys(texts))
        position = {text: i for i, text in enumerate(unique)}
        tokens, report = tokenize_texts(self.backend.tokenizer, unique, self.backend.max_model_len)
        report.log("texts", self.mteb_model_meta.name)
        pooled = self.backend.pool(tokens, "embed", desc=desc)
        self._check_finite(pooled, "embeddings")
        self.stats.calls += 1
        self.stats.texts += len(texts)
        self.stats.unique_texts += len(unique)
        self.stats.tokens += sum(len(t) for t in tokens)
        self.stats.truncated += report.truncated
        if not texts:
            return np.zeros((0, pooled.shape[1] if pooled.ndim == 2 else 0), dtype=np.float32)
        return pooled[np.fromiter((position[t] for t in texts), dtype=np.int64, count=len(texts))]
