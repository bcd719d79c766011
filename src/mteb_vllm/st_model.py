"""sentence-transformers' own model objects, with vLLM in place of the transformer's weights.

Why: mteb's reference for most models is ``SentenceTransformer`` (or ``CrossEncoder``) built by the model's
registry loader, and every detail of it changes scores: which files hold the context length in which
sentence-transformers version, lower-casing, tokenizer arguments such as ``add_eos_token``, the prompt and its
token count, six pooling modes with or without the prompt, Dense layers and their default activation,
LayerNorm, Normalize, ``truncate_dim``, a cross-encoder's saved activation. Rather than re-implement each, these
classes *are* sentence-transformers' classes, built by sentence-transformers' own loader, with one change: the
Transformer module (:class:`EngineTransformer`) loads the config and tokenizer but no weights, and the model's
``forward`` hands the token ids sentence-transformers produced to an engine (the wrapper's backend stack,
which runs the transformer in vLLM and the modules after it with these very module objects, see
:mod:`mteb_vllm.backends.st_modules`). Everything before the forward (prompts, tokenization, truncation) and
after it (``truncate_dim``, ``normalize_embeddings``, activation, output types) is sentence-transformers' code.

What cannot be reproduced is refused when the model is built, before any engine starts
(:class:`~mteb_vllm.errors.UnsupportedModelError`): other first modules than a Transformer (static embeddings,
routers, CLIP), modules that need inputs an engine cannot give (LSTM, layer-weighted pooling), custom module
code, PEFT adapters, non-torch backends, loader arguments that would change the transformer's computation.

This module imports sentence-transformers and torch; it is imported lazily by the wrappers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from sentence_transformers import CrossEncoder, SentenceTransformer
from sentence_transformers.base.modules import Transformer
from torch import nn

from .backends.protocol import TokenizedInput
from .errors import InvalidInputError, UnsupportedModelError
from .tokenizing import TOKENIZER_LOCK, TruncationReport, check_texts

logger = logging.getLogger(__name__)

#: ``modules.json`` types of the Transformer module, in every layout sentence-transformers 2-6 write.
TRANSFORMER_TYPES = ("sentence_transformers.models.Transformer",
                     "sentence_transformers.base.modules.transformer.Transformer")

#: Modules after the Transformer that run exactly on what an engine returns (token embeddings, the mask, the
#: prompt length, the token ids), by class name. Anything else is refused with its name.
SUPPORTED_POST_MODULES = frozenset({"Pooling", "Dense", "Normalize", "LayerNorm", "Dropout", "WordWeights"})
_NEEDS_MORE = {"LSTM": "word lengths that only a WordEmbeddings input module produces",
               "WeightedLayerPooling": "the hidden states of every layer, which vLLM does not return",
               "Router": "a different module chain per task", "Asym": "a different module chain per task"}

#: Transformer tasks the engine reproduces: embedding models and sequence-classification cross-encoders.
_ENGINE_TASKS = ("feature-extraction", "sequence-classification")

#: ``model_kwargs`` a loader may pass that do not change what the transformer computes here: the precision is
#: mteb-vllm's policy (recorded with the results), the attention kernel is vLLM's.
_IGNORED_MODEL_KWARGS = frozenset({"dtype", "torch_dtype", "attn_implementation", "device_map", "low_cpu_mem_usage"})
#: ``config_kwargs`` that do not change the transformer's outputs.
_NEUTRAL_CONFIG_KWARGS = frozenset({"use_cache"})

#: Texts per sentence-transformers batch: one engine call each. ST sorts by length first, so a batch holds
#: texts of similar length; big enough that vLLM's steps are full, small enough that the padded token-id
#: tensors sentence-transformers builds stay small (8192 x 512 x int64 x 3 = 100 MB).
ENGINE_BATCH = 8192

_BUILD_LOCK = threading.RLock()


class _EngineStub(nn.Module):
    """Sits where the Hugging Face model would be: sentence-transformers reads its ``config`` and the signature
    of its ``forward``; the forward itself never runs (the model's forward goes to the engine)."""

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    def forward(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None, **kwargs: Any):
        raise RuntimeError("the engine stand-in has no weights; its model's forward sends token ids to vLLM")


class EngineTransformer(Transformer):
    """sentence-transformers' Transformer module with the config and tokenizer but without weights.

    Its preprocessing is sentence-transformers' own; it only adds a count of the inputs that were cut to the
    context length (sentence-transformers cuts silently; mteb-vllm reports every cut, see
    :class:`~mteb_vllm.tokenizing.TruncationReport`).
    """

    def _load_model(self, model_name_or_path: str, transformer_task: str, config: Any, backend: str,
                    is_peft_model: bool, **model_kwargs: Any) -> nn.Module:
        if backend != "torch":
            raise UnsupportedModelError(f"{model_name_or_path}: sentence-transformers backend {backend!r}; mteb-vllm "
                                        "runs the model's torch weights in vLLM")
        if is_peft_model:
            raise UnsupportedModelError(f"{model_name_or_path} is a PEFT adapter; mteb-vllm does not merge adapters. "
                                        "Merge it into the base model and save that, or evaluate it with "
                                        "mteb.get_model(name) (the reference path)")
        if transformer_task not in _ENGINE_TASKS:
            raise UnsupportedModelError(f"{model_name_or_path}: its sentence-transformers Transformer runs the task "
                                        f"{transformer_task!r}; mteb-vllm reproduces {list(_ENGINE_TASKS)}")
        # the loader's own model_kwargs were checked when the model was built (_check_loader_kwargs); what
        # sentence-transformers adds here (revision, token, cache_dir, subfolder ...) says where the files are
        self.__dict__["subfolder"] = str(model_kwargs.get("subfolder") or "")
        return _EngineStub(config)

    def preprocess(self, inputs: Any, prompt: str | None = None, processing_kwargs: Any = None, **kwargs: Any):
        with TOKENIZER_LOCK:  # a fast tokenizer's truncation setting is state; threads share this module
            return self._preprocess(inputs, prompt, processing_kwargs, kwargs)

    def _preprocess(self, inputs: Any, prompt: str | None, processing_kwargs: Any, kwargs: dict[str, Any]):
        features = super().preprocess(inputs, prompt=prompt, processing_kwargs=processing_kwargs, **kwargs)
        if self.__dict__.get("_measuring_prompt"):
            return features
        probe = self.__dict__.get("_probe_log")
        if probe is not None:
            probe.append((list(inputs), prompt))
        if inputs and "input_ids" in features and "attention_mask" in features:
            self._count_truncation(inputs, features, prompt, processing_kwargs, kwargs)
        if inputs and isinstance(inputs[0], (list, tuple)):  # cross-encoder pairs: kept for servers taking text
            features["pair_texts"] = [tuple(pair) for pair in inputs]
        return features

    def _get_prompt_length(self, prompt: str, **kwargs: Any) -> int | None:
        self.__dict__["_measuring_prompt"] = True
        try:
            return super()._get_prompt_length(prompt, **kwargs)
        finally:
            self.__dict__["_measuring_prompt"] = False

    @contextlib.contextmanager
    def probing(self) -> Iterator[list[tuple[list[Any], str | None]]]:
        """Record what each preprocess call receives (inputs and prompt) for the block: how the wrapper learns
        which text a loader puts around an input without running the engine."""
        log: list[tuple[list[Any], str | None]] = []
        self.__dict__["_probe_log"] = log
        try:
            yield log
        finally:
            self.__dict__.pop("_probe_log", None)
            self.take_truncation()

    @property
    def is_probing(self) -> bool:
        return self.__dict__.get("_probe_log") is not None

    def _count_truncation(self, inputs: Any, features: dict[str, Any], prompt: str | None, processing_kwargs: Any,
                          kwargs: dict[str, Any]) -> None:
        """Truncated rows all have the batch's longest length; only those are tokenized again, uncut."""
        lengths = features["attention_mask"].sum(dim=-1)
        longest = int(lengths.max())
        report = self.truncation
        report.total += len(inputs)
        candidates = [i for i, n in enumerate(lengths.tolist()) if n == longest]
        uncut = dict(processing_kwargs or {})
        uncut["text"] = {**dict(uncut.get("text") or {}), "truncation": False, "verbose": False}
        full = super().preprocess([inputs[i] for i in candidates], prompt=prompt, processing_kwargs=uncut, **kwargs)
        full_lengths = full["attention_mask"].sum(dim=-1).tolist()
        cut = [n for n in full_lengths if n > longest]
        if cut:
            report.truncated += len(cut)
            report.max_len = longest
            report.longest = max(report.longest, *cut)

    @property
    def truncation(self) -> TruncationReport:
        """Totals since the last :meth:`take_truncation` (inputs seen, inputs cut, the limit, the longest)."""
        report = self.__dict__.get("_truncation")
        if report is None:
            report = self.__dict__["_truncation"] = TruncationReport()
        return report

    def take_truncation(self) -> TruncationReport:
        report = self.truncation
        self.__dict__["_truncation"] = TruncationReport()
        return report


def _surviving_pair(tokenizer: Any, pair: tuple[str, str], length: int) -> tuple[str, str]:
    """The two texts of a pair as far as their tokens survived truncation to ``length`` tokens (what a server that
    takes text pairs must be sent to see the same tokens); the pair itself when nothing was cut."""
    from .tokenizing import _surviving_texts

    query, document = pair
    full = tokenizer(query, document, truncation=False)["input_ids"]
    if len(full) <= length:
        return query, document
    cut = tokenizer([query], [document], truncation="longest_first", max_length=length,
                    return_offsets_mapping=True)
    return _surviving_texts(cut, 0, query, document)


@contextlib.contextmanager
def _global(module: Any, name: str, value: Any) -> Iterator[None]:
    """``module.name = value`` for the block. Used only under :data:`_BUILD_LOCK`, to make sentence-transformers'
    default-module builder (which names ``Transformer`` directly) build an :class:`EngineTransformer`."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def _check_loader_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Arguments of a ``SentenceTransformer``/``CrossEncoder`` call that would change the transformer's
    computation in ways vLLM cannot reproduce are refused; the rest go to sentence-transformers as they are."""
    if kwargs.get("modules") is not None:
        raise UnsupportedModelError(f"{name}: the loader builds the model from its own modules list")
    if kwargs.get("backend", "torch") != "torch":
        raise UnsupportedModelError(f"{name}: sentence-transformers backend {kwargs['backend']!r}")
    if kwargs.get("use_kernels"):
        raise UnsupportedModelError(f"{name}: use_kernels=True swaps the transformer's kernels")
    model_kwargs = dict(kwargs.get("model_kwargs") or kwargs.get("automodel_args") or {})
    unknown = sorted(set(model_kwargs) - _IGNORED_MODEL_KWARGS - {"trust_remote_code"})
    if unknown:
        raise UnsupportedModelError(f"{name}: the loader passes model_kwargs {unknown}, which change how the "
                                    "transformer is built; mteb-vllm cannot reproduce that in vLLM")
    for key in ("dtype", "torch_dtype"):
        if key in model_kwargs:
            logger.info("%s: mteb's loader loads the model in %s; mteb-vllm computes in the precision its policy "
                        "chooses (recorded with the results)", name, model_kwargs[key])
    config_kwargs = dict(kwargs.get("config_kwargs") or kwargs.get("config_args") or {})
    changed = sorted(set(config_kwargs) - _NEUTRAL_CONFIG_KWARGS)
    if changed:
        raise UnsupportedModelError(f"{name}: the loader changes the model config ({changed}); vLLM would load the "
                                    "saved config, so the scores would differ from the reference")


class _EngineForward:
    """What both stand-ins share: the engine hook, module checks and the encode-time input checks."""

    #: Set by the wrapper: token rows -> float32 array (embeddings, or a cross-encoder's logits).
    engine: Callable[[list[TokenizedInput]], np.ndarray] | None

    #: Where the class's forward puts the engine's output (sentence-transformers' name for it).
    _output: str

    def forward(self, input: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """The Transformer's forward pass and what the engine pools or scores, in one engine call."""
        out = dict(input)
        out[self._output] = self._run_engine(input)
        return out

    def _build(self, what: str, model_name_or_path: str | None, args: tuple, kwargs: dict[str, Any]) -> str:
        """Run the sentence-transformers class's own ``__init__`` (the next class in the MRO) with every
        Transformer module built as an :class:`EngineTransformer`; returns the model's name for messages."""
        if args:  # sentence-transformers takes only the name positionally; say so as it does
            raise TypeError(f"{what}() takes 1 positional argument but {1 + len(args)} were given")
        name = str(model_name_or_path)
        _check_loader_kwargs(name, kwargs)
        self._module_classes = {t: EngineTransformer for t in TRANSFORMER_TYPES}
        self.engine = None
        with _BUILD_LOCK:
            super().__init__(model_name_or_path, **kwargs)  # type: ignore[call-arg]
        return name

    def _load_defaults_with_engine(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        """The class's ``_load_default_modules`` (a folder without modules.json) with ``module.Transformer``
        swapped for :class:`EngineTransformer` while it runs."""
        with _BUILD_LOCK, _global(module, "Transformer", EngineTransformer):
            return super()._load_default_modules(*args, **kwargs)  # type: ignore[misc]

    def _engine_rows(self, features: dict[str, Any]) -> list[TokenizedInput]:
        ids, mask = features["input_ids"], features["attention_mask"].bool()
        types = features.get("token_type_ids")
        pairs = features.get("pair_texts")
        prompt_length = features.get("prompt_length") if self._uses_prompt_length else None
        rows = []
        lengths = mask.sum(dim=-1).tolist()
        longest = max(lengths, default=0)
        # One conversion per batch, then plain slicing: the real tokens are one run at either end (the tokenizer's
        # padding side); a mask with holes (never produced by a tokenizer) falls back to masking.
        contiguous = bool((mask.long().diff(dim=-1).abs().sum(dim=-1) <= 1).all()) if ids.shape[0] else True
        all_ids, all_mask = ids.tolist(), mask.tolist()
        all_types = types.tolist() if types is not None else None
        for i, n in enumerate(lengths):
            if contiguous:
                start = all_mask[i].index(True) if n else 0
                keep = slice(start, start + n)
                row = all_ids[i][keep]
                type_row = all_types[i][keep] if all_types is not None else None
            else:
                row = ids[i][mask[i]].tolist()
                type_row = types[i][mask[i]].tolist() if types is not None else None
            pair = None
            if pairs is not None:  # only rows of the batch's longest length can have been cut
                pair = _surviving_pair(self.transformer.tokenizer, pairs[i], len(row)) if len(row) == longest \
                    else tuple(pairs[i])
            rows.append(TokenizedInput(row, type_row if type_row and any(type_row) else None, pair=pair,
                                       prompt_length=int(prompt_length) if prompt_length is not None else None))
        return rows

    def _run_engine(self, features: dict[str, Any]) -> torch.Tensor:
        if self.engine is None:
            raise RuntimeError("this sentence-transformers stand-in has no engine attached")
        return torch.from_numpy(np.ascontiguousarray(self.engine(self._engine_rows(features))))

    @property
    def transformer(self) -> EngineTransformer:
        first = next(iter(self))
        assert isinstance(first, EngineTransformer)
        return first

    def _check_modules(self, name: str) -> None:
        modules = list(self)
        if not modules or not isinstance(modules[0], EngineTransformer):
            first = type(modules[0]).__name__ if modules else "nothing"
            raise UnsupportedModelError(
                f"{name}: its first sentence-transformers module is {first}, not a Transformer (static embeddings, "
                "routers and multimodal models are not run through vLLM); evaluate it with mteb.get_model(name)")
        for module in modules[1:]:
            kind = type(module).__name__
            if not type(module).__module__.startswith("sentence_transformers."):
                raise UnsupportedModelError(f"{name}: custom sentence-transformers module {type(module).__module__}."
                                            f"{kind}; mteb-vllm runs only sentence-transformers' own modules")
            if kind in _NEEDS_MORE:
                raise UnsupportedModelError(f"{name}: its {kind} module needs {_NEEDS_MORE[kind]}")
            if kind not in SUPPORTED_POST_MODULES:
                raise UnsupportedModelError(f"{name}: sentence-transformers module {kind} is not supported")
            if isinstance(module, Transformer):
                raise UnsupportedModelError(f"{name}: a second Transformer module")

    @property
    def _uses_prompt_length(self) -> bool:
        return any(getattr(m, "include_prompt", True) is False for m in list(self)[1:])


class VllmSentenceTransformer(_EngineForward, SentenceTransformer):
    """``SentenceTransformer`` whose transformer runs in vLLM (see the module docstring).

    Built by :func:`mteb_vllm.reference.build_reference` in place of ``SentenceTransformer`` while mteb's
    registry loader runs, so the loader's arguments and everything it does to the model afterwards
    (``max_seq_length``, ``set_pooling_include_prompt``, prompts, tokenizer attributes) act on
    sentence-transformers' own objects.
    """

    _output = "sentence_embedding"

    def __init__(self, model_name_or_path: str | None = None, *args: Any, **kwargs: Any):
        name = self._build("SentenceTransformer", model_name_or_path, args, kwargs)
        self._check_modules(name)
        self.eval()

    def _load_default_modules(self, *args: Any, **kwargs: Any):
        from sentence_transformers.sentence_transformer import model as st_model

        return self._load_defaults_with_engine(st_model, args, kwargs)

    @property
    def post_modules(self) -> list[nn.Module]:
        """The modules after the Transformer, run on the engine's output."""
        return list(self)[1:]

    def encode(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """``SentenceTransformer.encode`` with whole engine batches: the caller's ``batch_size`` (mteb passes 32)
        only sizes sentence-transformers' tokenizer calls, and results do not depend on it here (the engine sees
        unpadded rows). Text inputs only; every input is checked before anything runs."""
        if args:
            raise TypeError("encode() takes the inputs positionally and everything else by keyword")
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        check_texts(texts, "input")
        for key in ("pool", "chunk_size"):
            if kwargs.get(key) is not None:
                raise UnsupportedModelError(f"encode({key}=...): multi-process encoding does not apply to vLLM")
        if kwargs.get("output_value", "sentence_embedding") != "sentence_embedding":
            raise UnsupportedModelError(f"encode(output_value={kwargs['output_value']!r}): only sentence embeddings "
                                        "are computed through vLLM")
        kwargs["batch_size"] = ENGINE_BATCH
        kwargs["show_progress_bar"] = False
        return super().encode(inputs, **kwargs)


class VllmCrossEncoder(_EngineForward, CrossEncoder):
    """``CrossEncoder`` whose transformer runs in vLLM: sentence-transformers decides the activation (from
    wherever version 2-6 saved it), the label count, the context length and the pair tokenization; the engine
    returns raw logits."""

    _output = "scores"

    def __init__(self, model_name_or_path: str | None = None, *args: Any, **kwargs: Any):
        name = self._build("CrossEncoder", model_name_or_path, args, kwargs)
        modules = list(self)
        if len(modules) != 1 or not isinstance(modules[0], EngineTransformer) \
                or modules[0].transformer_task != "sequence-classification":
            kinds = [type(m).__name__ for m in modules]
            raise UnsupportedModelError(
                f"{name}: a cross-encoder made of {kinds}; mteb-vllm scores sequence-classification cross-encoders "
                "(one Transformer) and LLM rerankers through a score template (template=ScoreTemplate(...))")
        self.eval()

    def _load_default_modules(self, *args: Any, **kwargs: Any):
        from sentence_transformers.cross_encoder import model as ce_model

        return self._load_defaults_with_engine(ce_model, args, kwargs)

    def predict(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """``CrossEncoder.predict`` with whole engine batches (see :meth:`VllmSentenceTransformer.encode`)."""
        if args:
            raise TypeError("predict() takes the pairs positionally and everything else by keyword")
        for i, pair in enumerate(inputs):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise InvalidInputError(f"pair {i} is {type(pair).__name__}, not a (query, document) pair")
        check_texts([p[0] for p in inputs], "query")
        check_texts([p[1] for p in inputs], "document")
        if kwargs.get("pool") is not None:
            raise UnsupportedModelError("predict(pool=...): multi-process scoring does not apply to vLLM")
        kwargs["batch_size"] = ENGINE_BATCH
        kwargs["show_progress_bar"] = False
        return super().predict(inputs, **kwargs)
