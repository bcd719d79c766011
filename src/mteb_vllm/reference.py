"""mteb's reference model, built by mteb's own loader, with vLLM underneath.

Why run the loader instead of reading its arguments: a registry entry's behaviour is spread over a loader class
or function, its ``loader_kwargs``, what it does to the ``SentenceTransformer`` after building it
(``max_seq_length``, ``set_pooling_include_prompt``, tokenizer attributes), how it calls ``encode`` (prompts,
instructions, ``prompt_name``), and what it does to the vectors afterwards (nomic-embed's layer norm). Any
re-implementation drifts. So :func:`build_reference` calls the loader exactly as ``mteb.get_model(name)`` does,
while ``sentence_transformers.SentenceTransformer`` / ``CrossEncoder`` are our stand-ins
(:mod:`mteb_vllm.st_model`: sentence-transformers' own classes with the transformer's weights left to vLLM).
The object it returns *is* the reference, and our wrapper calls its ``encode``.

A loader that loads weights some other way (a Hugging Face model class directly, GritLM, LLM2Vec, INSTRUCTOR, an
API client) is refused: Hugging Face ``from_pretrained`` is blocked while the loader runs, so nothing is loaded
twice and nothing is silently evaluated without the reference's setup.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import UnsupportedModelError

if TYPE_CHECKING:
    from mteb.models import ModelMeta

logger = logging.getLogger(__name__)

#: Replacing module attributes is process-wide: one build at a time, and nothing else may build a
#: ``SentenceTransformer`` through these names meanwhile (other threads of the caller wait at most one build).
_PATCH_LOCK = threading.RLock()

_ST_NAMES = ("SentenceTransformer", "CrossEncoder", "SparseEncoder", "MultiVectorEncoder")


class _ForeignWeights(Exception):
    """A loader asked Hugging Face for model weights outside sentence-transformers."""


@dataclass
class Reference:
    """What ``mteb.get_model(name)`` returns, built over the stand-in, and the stand-in itself."""

    model: Any
    st: Any
    #: How the reference was built, for logs and errors ("mteb registry loader InstructSentenceTransformerModel").
    source: str
    stand_ins: list[Any] = field(default_factory=list)


#: ``(len(sys.modules), last module imported)`` and the mteb / sentence-transformers modules then imported.
_BINDING_MODULES: tuple[tuple[int, str | None] | None, list[Any]] = ((-1, None), [])


def _binding_modules() -> list[Any]:
    """The imported modules of mteb and sentence-transformers, where a loader's ``SentenceTransformer`` binding can
    live. Why kept: scanning ``sys.modules`` (6,500 entries once mteb is imported) costs ~10 ms, once per wrapper;
    the list is scanned again only when a module was imported (or removed) since."""
    global _BINDING_MODULES
    try:
        key: tuple[int, str | None] | None = (len(sys.modules), next(reversed(sys.modules), None))
    except RuntimeError:  # another thread imported a module meanwhile: scan now
        key = None
    # (A module replaced under the same name, not the last one, keeps the key and is not patched; a loader reaching
    # the real SentenceTransformer through it is refused when an engine is used: _weights_blocked.)
    if key is None or _BINDING_MODULES[0] != key:
        modules = [module for module_name, module in list(sys.modules.items())
                   if module is not None and module_name.startswith(("mteb.", "sentence_transformers."))]
        _BINDING_MODULES = (key, modules)
    return _BINDING_MODULES[1]


@contextlib.contextmanager
def _stand_ins(factories: dict[str, Any]) -> Iterator[None]:
    """``sentence_transformers.<name>`` (and every already imported mteb module's binding of it) replaced by
    ``factories[name]`` for the block."""
    import sentence_transformers

    originals = {name: getattr(sentence_transformers, name, None) for name in _ST_NAMES}
    patched: list[tuple[Any, str, Any]] = []
    for name, factory in factories.items():
        original = originals.get(name)
        if original is None:
            continue
        patched.append((sentence_transformers, name, original))
        patched += [(module, name, original) for module in _binding_modules()
                    if module.__dict__.get(name) is original and module is not sentence_transformers]
    try:
        for module, name, _ in patched:
            setattr(module, name, factories[name])
        yield
    finally:
        for module, name, original in patched:
            setattr(module, name, original)


@contextlib.contextmanager
def _weights_blocked() -> Iterator[None]:
    """``PreTrainedModel.from_pretrained`` raises for the block: only the stand-ins may build the model."""
    from transformers import PreTrainedModel

    original = PreTrainedModel.__dict__["from_pretrained"]

    def refuse(cls: Any, name: Any = None, *args: Any, **kwargs: Any) -> Any:
        raise _ForeignWeights(f"{cls.__name__}.from_pretrained({name!r})")

    PreTrainedModel.from_pretrained = classmethod(refuse)  # type: ignore[method-assign]
    try:
        yield
    finally:
        PreTrainedModel.from_pretrained = original  # type: ignore[method-assign]


def _refuse_kind(kind: str, name: str) -> type:
    class Refused:
        def __init__(self, *args: Any, **kwargs: Any):
            raise UnsupportedModelError(f"{name}: mteb's loader builds a sentence-transformers {kind}; mteb-vllm "
                                        "evaluates dense embedding models and cross-encoders. Evaluate it with "
                                        f"mteb.get_model({name!r}) (the reference path)")
    return Refused


def _loader_name(loader: Any) -> str:
    return getattr(loader, "__qualname__", None) or getattr(loader, "__name__", None) or type(loader).__name__


def model_files(path: str, revision: str | None, backend: Any, options: dict[str, Any]) -> str:
    """Where the stand-in reads the model's files: the model itself; or, for a backend of the caller's own (a
    fake, a test double) and a name that has files nowhere, :func:`~mteb_vllm.testing.fake_backend.fake_model_folder`, so the
    wrappers' logic can be tested with any name and no checkpoint. A real engine or a fleet needs real files."""
    from .checkpoint import hub_file

    real_engine = backend in (None, "local", "remote") or bool(options.get("endpoints"))
    if real_engine or hub_file(path, "config.json", revision) is not None:
        return path
    from .testing.fake_backend import fake_model_folder

    return fake_model_folder()


def build_reference(meta: ModelMeta | None, model_path: str, revision: str | None, *, cross_encoder: bool = False,
                    trust_remote_code: bool = False, engine: bool = True) -> Reference:
    """Build the reference model as ``mteb.get_model`` would, over the vLLM stand-ins.

    Args:
        meta: mteb's registry entry (its loader and ``loader_kwargs`` apply), or None for a model mteb does not
            know: then mteb's default for sentence-transformers models (``SentenceTransformerEncoderWrapper`` /
            ``CrossEncoderWrapper``) is the reference.
        model_path: Where the files are (a local folder or a hub id). Registry loaders name the model by its
            registry name; the stand-in loads ``model_path`` at ``revision`` instead, so a local copy or a
            user's revision is what runs.
        revision: Hub revision to read the files at (None for a local folder).
        cross_encoder: Build a reranker (``CrossEncoder``) rather than an embedding model.
        trust_remote_code: Passed to sentence-transformers when the loader does not say (a loader's own value wins,
            as in the reference).
        engine: True: the stand-ins, with vLLM under them. False: sentence-transformers' real classes, on the same
            files, with the weights loaded in float32 whatever precision the loader asks for: the reference that
            ``mteb-vllm parity`` compares with.

    Raises:
        UnsupportedModelError: the loader builds something vLLM cannot reproduce exactly (named in the message).
    """
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from .st_model import VllmCrossEncoder, VllmSentenceTransformer

    name = meta.name if meta is not None and meta.name else model_path
    built: list[Any] = []

    def make(cls: Any) -> type:
        # A class, not a function: loaders and mteb check isinstance(model, CrossEncoder) against the patched name.
        class StandIn(cls):  # type: ignore[misc, valid-type]
            def __init__(self, model_name_or_path: Any = None, *args: Any, **kwargs: Any):
                # Our modules run on the CPU (the transformer runs where vLLM runs). Saying so also keeps
                # sentence-transformers from probing CUDA, which would initialise it in the engine's process.
                kwargs["device"] = "cpu"
                if model_name_or_path not in (None, name, model_path):
                    raise UnsupportedModelError(
                        f"{name}: mteb's loader builds {model_name_or_path!r}, not the model itself; mteb-vllm "
                        "cannot tell which weights the reference evaluates")
                kwargs["revision"] = revision
                kwargs.setdefault("trust_remote_code", trust_remote_code)
                if not engine:
                    import torch

                    model_kwargs = dict(kwargs.get("model_kwargs") or {})
                    model_kwargs.pop("torch_dtype", None)
                    kwargs["model_kwargs"] = {**model_kwargs, "dtype": torch.float32}
                super().__init__(model_path, *args, **kwargs)
                built.append(self)

        StandIn.__name__ = StandIn.__qualname__ = cls.__name__
        return StandIn

    factories = {"SentenceTransformer": make(VllmSentenceTransformer if engine else SentenceTransformer),
                 "CrossEncoder": make(VllmCrossEncoder if engine else CrossEncoder),
                 "SparseEncoder": _refuse_kind("SparseEncoder (sparse model)", name),
                 "MultiVectorEncoder": _refuse_kind("MultiVectorEncoder (late interaction)", name)}
    loader = meta.loader if meta is not None else None
    source = f"mteb registry loader {_loader_name(loader)}" if loader is not None else (
        "mteb's CrossEncoderWrapper" if cross_encoder else "mteb's SentenceTransformerEncoderWrapper")
    try:
        with _PATCH_LOCK, _stand_ins(factories), _weights_blocked() if engine else contextlib.nullcontext():
            if meta is not None and loader is not None:
                model = meta.load_model()
            elif cross_encoder:
                from mteb.models.sentence_transformer_wrapper import CrossEncoderWrapper

                model = CrossEncoderWrapper(model_path, revision=revision)
            else:
                from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

                model = SentenceTransformerEncoderWrapper(model_path, revision=revision)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{exc} ({source})") from exc
    except _ForeignWeights as exc:
        raise UnsupportedModelError(
            f"{name}: {source} loads its weights without sentence-transformers ({exc}), so mteb-vllm cannot put vLLM "
            f"under it and reproduce it exactly. Evaluate it with mteb.get_model({name!r}) (the reference path)"
        ) from None
    except ImportError as exc:  # the loader's own requirements (a package, a version range) are not met here
        raise UnsupportedModelError(f"{name}: {source} cannot run in this environment ({exc}); mteb-vllm reproduces "
                                    "what the reference does, so it cannot evaluate this model here") from exc
    except OSError as exc:  # files missing, offline without a cached copy, gated repository
        from .errors import ModelNotFoundError

        raise ModelNotFoundError(f"{name}: the model's files cannot be read ({type(exc).__name__}: {exc}). Pass a "
                                 "local folder, or check the id and the network (HF_HUB_OFFLINE=1 reads only the "
                                 "local Hugging Face cache)") from exc
    except Exception as exc:  # the loader itself fails: the reference cannot be built, so neither can ours
        raise UnsupportedModelError(f"{name}: {source} fails ({type(exc).__name__}: {exc}), so the reference's "
                                    "setup cannot be reproduced") from exc
    if not built:
        raise UnsupportedModelError(
            f"{name}: {source} built no sentence-transformers model, so mteb-vllm cannot put vLLM under it. Evaluate "
            f"it with mteb.get_model({name!r}) (the reference path)")
    if len(built) > 1:
        raise UnsupportedModelError(f"{name}: {source} builds {len(built)} sentence-transformers models; mteb-vllm "
                                    "runs one model per wrapper")
    return Reference(model=model, st=built[0], source=source, stand_ins=built)
