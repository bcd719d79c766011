"""``VllmEncoderWrapper``: mteb's encoder protocol on a vLLM embedding engine (or any other backend).

How an encode runs: mteb calls :meth:`VllmEncoderWrapper.encode`; that calls the ``encode`` of the reference
model, the very object ``mteb.get_model(name)`` returns, built by mteb's registry loader over
sentence-transformers' own ``SentenceTransformer`` class with the transformer's weights left to vLLM
(:mod:`mteb_vllm.reference`, :mod:`mteb_vllm.st_model`). Prompts, instructions, tokenization, truncation and any
post-processing the loader does are therefore the reference's. sentence-transformers hands each batch's token
ids to :meth:`VllmEncoderWrapper._embed_rows`, which checks, deduplicates and sends them down the backend stack
(cache → sentence-transformers' modules after the transformer → engine) and applies the NaN policy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from mteb.models.abs_encoder import AbsEncoder

from .backends.protocol import TokenizedInput
from .errors import EngineArgumentError, InvalidInputError, UnsupportedModelError, UnsupportedTaskError
from .process_state import frozen_heap, paused_gc
from .tokenizing import check_texts
from .wrapper import VllmWrapperBase

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models import ModelMeta
    from mteb.types import PromptType
    from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)

#: A text that no tokenizer merges with its neighbours, to find where a loader puts its prompt.
SENTINEL = "\u2063mteb-vllm-sentinel\u2063"


@dataclass(frozen=True)
class Prompt:
    """Text placed before and after every input of one (task, prompt type)."""

    prefix: str = ""
    suffix: str = ""

    def apply(self, text: str) -> str:
        return f"{self.prefix}{text}{self.suffix}"


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

    With no prompt arguments, the model is set up exactly as ``mteb.get_model(name)`` sets it up: mteb's registry
    loader runs for real (see the module docstring); for a model mteb does not know, mteb's default,
    ``SentenceTransformerEncoderWrapper``, with the model's own sentence-transformers configuration. Explicit
    arguments replace the reference's prompts:

    Args:
        prompt_dict: Static prompts keyed like mteb's ``model_prompts`` ("query", "document", a task
            type, a task name, or "TaskName-query"), prepended to the text. With ``use_instructions``,
            instructions keyed the same way and formatted with ``instruction_template``.
        use_instructions: Treat ``prompt_dict`` values (or the task's own instruction) as instructions.
        instruction_template: "...{instruction}..." or a callable ``(instruction, prompt_type) -> str``.
        apply_instruction_to_documents: With instructions, also prefix documents.
        ignore_prompt_errors: When mteb's registry loader for the model cannot be reproduced on vLLM, evaluate
            with mteb's default sentence-transformers setup instead of raising
            :class:`~mteb_vllm.errors.UnsupportedModelError`. Scores may then differ from the reference; the
            results are filed apart (``loader=default``).
        **engine_args: See :class:`~mteb_vllm.wrapper.VllmWrapperBase`.
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
        self._reference: Any = None
        self._st: Any = None
        self._default_loader = False  # the registry's loader could not be reproduced and is knowingly left out
        self._desc = ""
        self._task: str | None = None  # the mteb task of the encode under way (one precision per task)
        self.stats = EncodeStats()
        super().__init__(model, revision, **engine_args)

    # --- set-up, before any engine starts ----------------------------------------------------------------------
    def _prepare(self) -> None:
        """Build the reference model over the stand-in and check, on a probe input, that its encode path runs;
        a model or loader mteb-vllm cannot reproduce fails here, in seconds, not after the engine start."""
        from .reference import build_reference

        path = self._model_files()
        meta = None if self._explicit_prompts else self.registry_meta
        with paused_gc():  # imports sentence-transformers and builds the reference loader
            try:
                self._reference = build_reference(meta, path, self.resolved.revision,
                                                  trust_remote_code=self.resolved.trust_remote_code)
            except UnsupportedModelError as exc:
                if not (self.ignore_prompt_errors and meta is not None):
                    raise
                logger.warning("%s; evaluating with mteb's default sentence-transformers setup instead "
                               "(ignore_prompt_errors=True; results are filed apart, under loader=default)", exc)
                self._default_loader = True
                self._reference = build_reference(None, path, self.resolved.revision,
                                                  trust_remote_code=self.resolved.trust_remote_code)
        self._st = self._reference.st
        self._st.engine = self._embed_rows
        user_len = self.config.max_model_len
        if user_len is not None:  # the user's context length: sentence-transformers truncates there too
            self._st.max_seq_length = user_len
        if not self._explicit_prompts:
            self._probe()

    def _model_files(self) -> str:
        """Where the stand-in reads the model's files: the model itself, or, for a fake backend and a name with
        no files anywhere, the fake's own weightless folder (so tests of the wrapper need no checkpoint)."""
        from .reference import model_files

        return model_files(self.model_path, self.resolved.revision, self._backend_spec, self._backend_options)

    def _probe(self) -> None:
        from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask
        from mteb.types import PromptType

        task = MockRetrievalTask.metadata  # the class attribute: an instance would seed the RNGs
        try:
            for side in (PromptType.query, PromptType.document):
                prompt = self.resolve_prompt(task, side)
                if prompt.prefix or prompt.suffix:
                    logger.info("%s: %s inputs of retrieval tasks get %r ... %r", self.resolved.name, side.value,
                                prompt.prefix, prompt.suffix)
        except UnsupportedModelError:
            raise
        except Exception as exc:
            raise UnsupportedModelError(
                f"{self.resolved.name}: {self._reference.source} fails on a probe input before any engine starts "
                f"({type(exc).__name__}: {exc}); mteb-vllm cannot reproduce it") from exc

    def _engine_settings(self) -> dict[str, Any]:
        """Context length, pooling and the modules run after the engine, all as sentence-transformers has them."""
        from .backends.st_modules import describe, plan

        if self.config.pooler_config is not None:
            raise EngineArgumentError(
                "pooler_config= would replace the model's sentence-transformers pooling, which mteb-vllm reproduces "
                "from its files (and mteb's loader); drop it")
        modules = self._st.post_modules
        native, _ = plan(modules)
        pooler = ({"task": "embed", "pooling_type": native, "use_activation": False} if native else
                  {"task": "token_embed", "pooling_type": "ALL", "use_activation": False})
        from .checkpoint import context_length

        length = context_length(self.model_path, self.resolved.revision, requested=self.config.max_model_len,
                                reference=self._st)
        return {"max_model_len": length,
                "pooler_config": pooler, "output_modules": describe(modules)}

    def _wrap_engine(self, backend: Any) -> Any:
        """The model's sentence-transformers modules over the engine; a shared stack that already runs the same
        modules is used as it is, one that runs another model's is refused (share ``wrapper.engine`` instead)."""
        from .backends.st_modules import StModulesBackend, describe

        layer = backend
        while layer is not None:
            if isinstance(layer, StModulesBackend):
                if layer.chain == describe(self._st.post_modules):
                    return backend
                raise EngineArgumentError(
                    "the shared backend runs another model's sentence-transformers modules; share the engine "
                    "itself: backend=other_wrapper.engine")
            layer = layer.inner
        return StModulesBackend(backend, self._st.post_modules)

    def _experiment_kwargs(self) -> dict[str, Any]:
        """Prompts that are not the reference's are part of a run's identity: ``loader="default"`` when the
        registry's loader could not be reproduced and was left out, ``prompts="custom-<hash>"`` for the caller's
        own."""
        extra = super()._experiment_kwargs()
        if self._default_loader:
            extra["loader"] = "default"
        elif self._explicit_prompts:
            spec = json.dumps([self.model_prompts, self.prompts_dict, self.use_instructions,
                               self.instruction_template if isinstance(self.instruction_template, str) else
                               repr(self.instruction_template), self.apply_instruction_to_documents],
                              sort_keys=True, default=repr)
            extra["prompts"] = "custom-" + hashlib.sha256(spec.encode()).hexdigest()[:8]
        return extra

    # --- prompts -------------------------------------------------------------------------------------------
    def resolve_prompt(self, task_metadata: TaskMetadata, prompt_type: PromptType | None,
                       hf_subset: str = "default", hf_split: str = "test") -> Prompt:
        """The text around inputs of this task, side and subset: the caller's prompts, else what the reference
        model puts around a probe text (its encode runs, the engine does not)."""
        from mteb.types import PromptType as PT

        if not self._explicit_prompts:
            return self._probe_prompt(task_metadata, prompt_type, hf_subset, hf_split)
        if self.use_instructions or self.instruction_template is not None:
            if prompt_type == PT.document and not self.apply_instruction_to_documents:
                return Prompt()
            return Prompt(self.get_task_instruction(task_metadata, prompt_type) or "")
        name = self.get_prompt_name(task_metadata, prompt_type)
        return Prompt(self.model_prompts.get(name, "") if (name and self.model_prompts) else "")

    def _probe_prompt(self, task_metadata: Any, prompt_type: Any, hf_subset: str, hf_split: str) -> Prompt:
        with self._st.transformer.probing() as seen:
            self._reference.model.encode(_loader([SENTINEL]), task_metadata=task_metadata, hf_split=hf_split,
                                         hf_subset=hf_subset, prompt_type=prompt_type, show_progress_bar=False)
        texts = [f"{prompt or ''}{text}" for batch, prompt in seen for text in batch if SENTINEL in str(text)]
        if len(texts) != 1:
            raise UnsupportedModelError(f"{self.resolved.name}: the reference's encode passed the probe text to the "
                                        f"model {len(texts)} times; mteb-vllm cannot tell what it applies")
        prefix, suffix = texts[0].split(SENTINEL)
        return Prompt(prefix, suffix)

    # --- mteb protocol -------------------------------------------------------------------------------------
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
        """Embeddings of every input, as the reference model computes them (float32 [n, dim], input order).

        Raises NonFiniteOutputError on NaN/Inf, UnsupportedTaskError for inputs that are not text.
        """
        started = time.perf_counter()
        self._check_task_name(task_metadata)
        inputs = _text_loader(inputs)
        show = kwargs.get("show_progress_bar", True)
        self._desc = f"{task_metadata.name} ({prompt_type.value if prompt_type else 'text'})" if show else ""
        self._task = task_metadata.name
        try:
            if self._explicit_prompts:
                prompt = self.resolve_prompt(task_metadata, prompt_type, hf_subset, hf_split)
                texts = [prompt.apply(t) for batch in inputs for t in batch["text"]]
                out = self.embed_texts(texts, desc=self._desc, task=self._task)
            else:
                with frozen_heap():
                    out = self._reference.model.encode(inputs, task_metadata=task_metadata, hf_split=hf_split,
                                                       hf_subset=hf_subset, prompt_type=prompt_type, **kwargs)
        finally:
            self._desc, self._task = "", None
        self.stats.seconds += time.perf_counter() - started
        out = np.asarray(out)
        return out if out.size else out.reshape(0, self.embedding_dim)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> Any:
        """As the reference model computes it (sentence-transformers' similarity function from the model's config
        for mteb's sentence-transformers wrapper, the registry's otherwise)."""
        if self._reference is not None and not self._explicit_prompts:
            return self._reference.model.similarity(embeddings1, embeddings2)
        return super().similarity(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> Any:
        if self._reference is not None and not self._explicit_prompts:
            return self._reference.model.similarity_pairwise(embeddings1, embeddings2)
        return super().similarity_pairwise(embeddings1, embeddings2)

    def embed_texts(self, texts: list[str], *, desc: str = "", task: str | None = None) -> np.ndarray:
        """Embed final strings (no prompt is added): the model's tokenization, engine and modules.

        ``task``: the mteb task the texts belong to, so a precision fallback never mixes two precisions in one
        task's scores (see :class:`~mteb_vllm.precision.PrecisionGuard`).
        Returns float32 [len(texts), dim] in input order, also for an empty list.
        """
        texts = check_texts(list(texts), "text")
        if not texts:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        previous = self._desc, self._task
        self._desc, self._task = desc or self._desc, task or self._task
        try:
            with frozen_heap():
                return np.asarray(self._st.encode(texts, prompt="", convert_to_numpy=True), dtype=np.float32)
        finally:
            self._desc, self._task = previous

    # --- the engine side -----------------------------------------------------------------------------------
    def _embed_rows(self, rows: list[TokenizedInput]) -> np.ndarray:
        """One sentence-transformers batch (token ids as the reference tokenized them) through the backend stack:
        final vectors, float32, in row order. Duplicates are computed once."""
        if self._st.transformer.is_probing:  # a prompt probe (see resolve_prompt): compute nothing
            dim = self._st.get_embedding_dimension() or 8
            return np.full((len(rows), dim), 1.0 / np.sqrt(dim), dtype=np.float32)
        report = self._st.transformer.take_truncation()
        report.log("texts", self.mteb_model_meta.name)
        limit = self.backend.max_model_len
        for i, row in enumerate(rows):
            if len(row) > limit:
                raise InvalidInputError(
                    f"{self.mteb_model_meta.name}: input {i} has {len(row)} tokens after the reference's truncation, "
                    f"but the model has {limit} positions (the loader sets max_seq_length "
                    f"{self._st.max_seq_length}); sentence-transformers fails on it too. Pass max_model_len={limit}")
        keys = [(tuple(r.token_ids), r.prompt_length) for r in rows]
        position: dict[tuple, int] = {}
        unique: list[TokenizedInput] = []
        for key, row in zip(keys, rows):
            if key not in position:
                position[key] = len(unique)
                unique.append(row)
        pooled = self._pool_checked(lambda: self.backend.pool(unique, "embed", desc=self._desc), "embeddings",
                                    self._task)
        self.stats.calls += 1
        self.stats.texts += len(rows)
        self.stats.unique_texts += len(unique)
        self.stats.tokens += sum(len(r) for r in unique)
        self.stats.truncated += report.truncated
        return pooled[np.fromiter((position[k] for k in keys), dtype=np.int64, count=len(keys))]

    @property
    def embedding_dim(self) -> int:
        """Width of this model's embeddings."""
        dim = self._st.get_embedding_dimension()
        if dim is None:
            dim = int(np.asarray(self._st.encode(["a"], prompt="", convert_to_numpy=True)).shape[1])
        return int(dim)


def _loader(texts: list[str]) -> Any:
    """A DataLoader of texts, as mteb passes them. It has a generator of its own: iterating a DataLoader draws
    its worker seed from the global torch generator otherwise, and the caller's random numbers would change."""
    import torch
    from datasets import Dataset
    from torch.utils.data import DataLoader

    return DataLoader(Dataset.from_dict({"text": texts}), batch_size=max(1, len(texts)), generator=torch.Generator())


def _text_loader(inputs: Any) -> Any:
    """mteb's DataLoader of text, checked: other modalities are refused before anything runs, and a plain
    list of ``{"text": [...]}`` batches (as tests and scripts pass) becomes a DataLoader."""
    dataset = getattr(inputs, "dataset", None)
    features = getattr(dataset, "features", None)
    if features is not None:
        other = [k for k in ("image", "audio", "video") if k in features]
        if other or "text" not in features:
            raise UnsupportedTaskError(
                f"this wrapper evaluates text only; the task gives {sorted(features)} "
                "(image/audio/video tasks need a multimodal model wrapper)")
        return inputs
    texts: list[Any] = []
    for batch in inputs:
        if not isinstance(batch, dict) or "text" not in batch:
            keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise UnsupportedTaskError(f"this wrapper evaluates text only; the task gives {keys}")
        texts.extend(batch["text"])
    return _loader(check_texts(texts, "input"))
