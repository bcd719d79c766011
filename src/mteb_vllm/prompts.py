"""Which text surrounds each input, decided the way mteb's reference loader decides it.

Why replay the reference instead of reading ``loader_kwargs``: a registry entry's prompts live in
many shapes (``model_prompts`` for e5, an ``instruction_template`` function hidden inside a loader
function for Qwen3-Embedding, built-in prompts in ``config_sentence_transformers.json``, per-task
dictionaries, ``apply_instruction_to_passages``...). Rather than re-implement each, we construct the
model's own mteb loader with a stand-in for ``SentenceTransformer`` that loads no weights and records
the strings it is asked to encode, then call the reference ``encode`` on a sentinel text. Whatever
prefix and suffix surround the sentinel is, by construction, what the reference applies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models import ModelMeta
    from mteb.types import PromptType

logger = logging.getLogger(__name__)

SENTINEL = "\u2063mteb-vllm-sentinel\u2063"


@dataclass(frozen=True)
class Prompt:
    """Text placed before and after every input of one (task, prompt type)."""

    prefix: str = ""
    suffix: str = ""

    def apply(self, text: str) -> str:
        return f"{self.prefix}{text}{self.suffix}"


class _Anything:
    """Absorbs whatever a loader does to its model beyond ``encode`` (``model._first_module()...``)."""

    def __getattr__(self, name: str) -> _Anything:
        return _Anything()

    def __call__(self, *args: Any, **kwargs: Any) -> _Anything:
        return _Anything()

    def __setattr__(self, name: str, value: Any) -> None:
        pass


def read_st_config(model_path: str | None, revision: str | None = None) -> dict[str, Any]:
    """``config_sentence_transformers.json`` of a model, as sentence-transformers would read it: from a local
    folder, or for a hub id from the Hugging Face cache (downloaded when online). Empty when it has none."""
    if not model_path:
        return {}
    from .model_config import read_json_file

    return read_json_file(os.path.expanduser(model_path), "config_sentence_transformers.json", revision) or {}


def _make_recording_st(st_config: dict[str, Any], calls: list[list[str]]) -> type:
    builtin_prompts = dict(st_config.get("prompts") or {})
    builtin_default = st_config.get("default_prompt_name")

    class RecordingSentenceTransformer(_Anything):
        """Mimics SentenceTransformer's prompt handling (v5+) without a model."""

        def __init__(self, *args: Any, prompts: dict | None = None, default_prompt_name: str | None = None, **kw: Any):
            # As SentenceTransformer v6 builds them: "query" and "document" always exist (empty unless set), the
            # caller's prompts win, the saved config fills what is still unset. Without the empty "document",
            # encode_document fell through to a "passage"/"corpus" prompt or default_prompt_name and prefixed
            # documents the reference leaves bare.
            merged: dict[str, Any] = {"query": None, "document": None, **dict(prompts or {})}
            for name, text in builtin_prompts.items():
                if merged.get(name) is None:
                    merged[name] = text
            object.__setattr__(self, "prompts", {k: "" if v is None else v for k, v in merged.items()})
            object.__setattr__(self, "default_prompt_name", default_prompt_name or builtin_default)

        def __setattr__(self, name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        def encode(self, sentences: Any, prompt_name: str | None = None, prompt: str | None = None, **kw: Any):
            if prompt is None:
                if prompt_name is None:
                    prompt_name = self.default_prompt_name
                if prompt_name is not None:
                    prompt = self.prompts.get(prompt_name)
            if isinstance(sentences, str):
                sentences = [sentences]
            calls.append([(prompt or "") + s for s in sentences])
            return np.zeros((len(sentences), 1), dtype=np.float32)

        def encode_query(self, sentences: Any, prompt_name: str | None = None, prompt: str | None = None, **kw: Any):
            if prompt_name is None and prompt is None and "query" in self.prompts:
                prompt_name = "query"
            return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kw)

        def encode_document(self, sentences: Any, prompt_name: str | None = None, prompt: str | None = None, **kw: Any):
            if prompt_name is None and prompt is None:
                for candidate in ("document", "passage", "corpus"):
                    if candidate in self.prompts:
                        prompt_name = candidate
                        break
            return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kw)

    return RecordingSentenceTransformer


@contextlib.contextmanager
def _patched_sentence_transformer(fake: type):
    try:
        import sentence_transformers as st_module
    except ImportError:
        st_module = types.ModuleType("sentence_transformers")
        sys.modules["sentence_transformers"] = st_module
        created = True
    else:
        created = False
    original = getattr(st_module, "SentenceTransformer", None)
    st_module.SentenceTransformer = fake  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if created:
            sys.modules.pop("sentence_transformers", None)
        else:
            st_module.SentenceTransformer = original  # type: ignore[attr-defined]


class ReferencePromptReplay:
    """Resolves prompts by replaying a model's mteb reference loader (see module docstring)."""

    def __init__(self, loader: Callable[..., Any], name: str, revision: str | None,
                 loader_kwargs: dict[str, Any], st_config: dict[str, Any]):
        self._calls: list[list[str]] = []
        self._fake = _make_recording_st(st_config, self._calls)
        with _patched_sentence_transformer(self._fake):
            self._reference = loader(name, revision=revision, **loader_kwargs)
        self._cache: dict[tuple[str, str | None, str, str], Prompt] = {}

    def __call__(self, task_metadata: TaskMetadata, prompt_type: PromptType | None, hf_subset: str = "default",
                 hf_split: str = "test") -> Prompt:
        """The prompt of one task, side and subset (some loaders choose by subset, e.g. BRIGHT's domains)."""
        key = (task_metadata.name, prompt_type.value if prompt_type else None, hf_subset, hf_split)
        if key not in self._cache:
            self._cache[key] = self._replay(task_metadata, prompt_type, hf_subset, hf_split)
        return self._cache[key]

    def _replay(self, task_metadata: TaskMetadata, prompt_type: PromptType | None, hf_subset: str,
                hf_split: str) -> Prompt:
        from datasets import Dataset
        from torch.utils.data import DataLoader

        loader = DataLoader(Dataset.from_dict({"text": [SENTINEL]}), batch_size=1)
        self._calls.clear()
        with _patched_sentence_transformer(self._fake):
            self._reference.encode(loader, task_metadata=task_metadata, hf_split=hf_split,
                                   hf_subset=hf_subset, prompt_type=prompt_type, show_progress_bar=False)
        seen = [s for call in self._calls for s in call if SENTINEL in s]
        if len(seen) != 1:
            raise RuntimeError(f"reference encode did not pass the text through exactly once: {self._calls}")
        prefix, suffix = seen[0].split(SENTINEL)
        return Prompt(prefix, suffix)


def reference_prompts(meta: ModelMeta | None, model_path: str | None, revision: str | None = None,
                      ) -> ReferencePromptReplay:
    """Prompt resolver equal to ``mteb.get_model(meta.name)``, or to mteb's default SentenceTransformer wrapper
    for models outside the registry.

    The loader is called exactly as ``ModelMeta.load_model`` calls it: with the registry's ``loader_kwargs``
    updated by its ``experiment_kwargs``. Raises :class:`~mteb_vllm.errors.PromptReplayError` naming the
    model and the cause when the loader cannot be replayed: evaluating without the reference's prompts would
    change the scores without anyone noticing.
    """
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    from .errors import PromptReplayError

    if meta is not None and meta.loader is not None:
        loader = meta.loader
        kwargs = {**dict(meta.loader_kwargs or {}), **dict(meta.experiment_kwargs or {})}
        name, ref_revision = meta.name, meta.revision
    else:
        loader, kwargs = SentenceTransformerEncoderWrapper, {}
        name, ref_revision = model_path or "unknown", revision
    st_config = read_st_config(model_path, revision if model_path != name else ref_revision)
    try:
        return ReferencePromptReplay(loader, name, ref_revision, kwargs, st_config)
    except Exception as exc:  # a loader that does not build on SentenceTransformer, or one that needs more
        raise PromptReplayError(
            f"could not replay mteb's reference loader for {name} ({type(exc).__name__}: {exc}), so the prompts "
            "the reference applies are unknown. Pass prompt_dict=... or instruction_template=... to set them, "
            "or ignore_prompt_errors=True (CLI: --ignore-prompt-errors) to evaluate without prompts; scores may "
            "then differ from the reference."
        ) from exc
