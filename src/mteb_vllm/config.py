"""Typed, validated vLLM engine arguments.

Why a dataclass rather than ``**kwargs`` straight into ``vllm.LLM``: a wrong value must fail in
milliseconds with the argument's name, not after a 40 s engine start with a stack trace from inside
vLLM. ``None`` always means "let mteb-vllm / vLLM choose"; the backend fills its own choices (on CPU:
precision, memory, step budget; see :mod:`mteb_vllm.cpu_defaults` and :mod:`mteb_vllm.precision`) only where
the user left ``None`` or "auto".
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import EngineArgumentError

Dtype = Literal["auto", "half", "float16", "bfloat16", "float", "float32"]
DTYPES: tuple[str, ...] = ("auto", "half", "float16", "bfloat16", "float", "float32")


_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


def check_revision(revision: str) -> str:
    """A revision is a commit, branch or tag name: it becomes a folder of the results, so nothing that could
    lead out of the output folder (``..``, absolute paths, backslashes) is accepted."""
    if not isinstance(revision, str) or not _REVISION.match(revision) or ".." in revision:
        raise EngineArgumentError(
            f"revision must be a commit hash, branch or tag (letters, digits, '.', '_', '-'), got {revision!r}")
    return revision


def check_path_name(name: str, what: str, *, slash: bool = True) -> str:
    """A model or task name becomes a folder or file name of the results (mteb replaces "/" in model names
    with "__", task names are used as they are); names that would point elsewhere (".", "..", backslashes,
    NUL, a "/" in a file name) are refused. ``slash``: whether "/" is allowed (model names)."""
    from .errors import UnsafeNameError

    flat = name.replace("/", "__") if isinstance(name, str) else name
    if (not isinstance(name, str) or not name.strip() or flat in (".", "..") or "\\" in name or "\0" in name
            or (not slash and "/" in name) or name.startswith(("/", "~")) or "../" in name or "/.." in name):
        raise UnsafeNameError(f"{what} {name!r} cannot be used as a results folder name; "
                              "use letters, digits and '-', '_', '.', '/'")
    return name


def _check_positive_int(name: str, value: Any, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EngineArgumentError(f"{name} must be a positive integer or None, got {value!r}")


def _engine_arg(default: Any, help: str, *, flag: bool = False, choices: tuple[str, ...] | None = None) -> Any:
    """A field a user sets (a wrapper keyword argument): its help text, and whether the CLI has a flag for it."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


@dataclass
class EngineConfig:
    """Everything needed to start one vLLM pooling engine, and the one declaration of the engine arguments.

    The fields with help text (:func:`engine_arguments`) are what a user passes to the wrappers by name
    (``VllmEncoderWrapper(model, dtype="float32", max_model_len=256)``) and, those marked as flags, to the CLI
    (``--dtype``, ``--max-model-len`` ...); the wrappers' docstring and the CLI's flags are generated from them.
    ``engine_kwargs`` is the documented pass-through for any other ``vllm.EngineArgs`` field; its keys are
    checked against ``EngineArgs`` before the engine starts.
    """

    model: str
    revision: str | None = None
    trust_remote_code: bool | None = _engine_arg(
        None, "Run modelling code shipped with the checkpoint. Default (None): what mteb's registry loader does for "
              "known models, False for others; a checkpoint that needs its own code is then refused before any "
              "engine starts, naming this argument.", flag=True)
    dtype: str = _engine_arg(
        "auto", "Compute precision. 'auto': on CPU bfloat16 where the CPU computes it natively (AVX512-BF16/AMX), "
                "else float32, never an emulated float16; on GPU bfloat16 from compute capability 8.0, else float16. "
                "If a half precision chosen this way gives NaN/Inf, the engine is restarted in float32 (with a "
                "warning) and no task mixes the two. The precision used is recorded with the results "
                "(experiment_kwargs['dtype']).", flag=True, choices=("auto", "float32", "bfloat16", "float16"))
    head_dtype: str | None = _engine_arg(None, "dtype of the pooling/classifier head ('model' keeps the model dtype).")
    max_model_len: int | None = _engine_arg(
        None, "Context length; longer inputs are truncated and counted. Default: the reference's (sentence-"
              "transformers' max_seq_length), else the checkpoint's.", flag=True)
    max_num_batched_tokens: int | None = _engine_arg(
        None, "Tokens per engine step (CPU default: 4096, or the context length if longer).", flag=True)
    max_num_seqs: int | None = _engine_arg(None, "Sequences per engine step (CPU default: 512).", flag=True)
    tensor_parallel_size: int = _engine_arg(1, "GPUs (or CPU core groups) to shard the model over.", flag=True)
    enable_prefix_caching: bool | None = _engine_arg(
        None, "Reuse the KV cache of shared prefixes (helps long instruction prompts).")
    gpu_memory_utilization: float | None = _engine_arg(
        None, "Fraction of device memory given to vLLM (on CPU: of RAM).", flag=True)
    hf_overrides: dict[str, Any] | None = _engine_arg(None, "Overrides of the Hugging Face config.")
    pooler_config: Any = _engine_arg(
        None, "vLLM PoolerConfig (pooling type, normalization). Only for LLM rerankers with a score template: "
              "sentence-transformers models take their pooling and modules from their files, and refuse it.")
    enforce_eager: bool | None = _engine_arg(
        None, "Skip torch.compile / CUDA graphs (default on CPU: True, it halves the start time).", flag=True)
    convert: str = "auto"
    #: An LLM reranker's :class:`~mteb_vllm.templates.ScoreTemplate`: the backend turns it into the engine's
    #: score head (``hf_overrides``) and context cap, so no wrapper has to know how an engine does that.
    score_template: Any = None
    #: The sentence-transformers modules run on the engine's output (:mod:`mteb_vllm.backends.st_modules`), in
    #: words and weight digests. Not an engine argument: it names what turns the engine's output into the
    #: model's vectors, so it is part of the cache fingerprint, and it tells the engine to hide those modules'
    #: files from vLLM (which would apply some of them itself, differently).
    output_modules: str | None = None
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise EngineArgumentError(f"model must be a non-empty string, got {self.model!r}")
        if self.dtype not in DTYPES:
            raise EngineArgumentError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.head_dtype is not None and self.head_dtype not in DTYPES + ("model",):
            raise EngineArgumentError(
                f"head_dtype must be None, 'model' or one of {DTYPES}, got {self.head_dtype!r}"
            )
        _check_positive_int("max_model_len", self.max_model_len)
        _check_positive_int("max_num_batched_tokens", self.max_num_batched_tokens)
        _check_positive_int("max_num_seqs", self.max_num_seqs)
        _check_positive_int("tensor_parallel_size", self.tensor_parallel_size, allow_none=False)
        gmu = self.gpu_memory_utilization
        if gmu is not None and (isinstance(gmu, bool) or not isinstance(gmu, (int, float)) or not 0 < gmu <= 1):
            raise EngineArgumentError(
                f"gpu_memory_utilization must be a fraction in (0, 1], got {gmu!r} "
                "(on CPU it is the fraction of the NUMA node's RAM given to vLLM)"
            )
        if self.revision is not None:
            check_revision(self.revision)
        for name in ("trust_remote_code", "enable_prefix_caching", "enforce_eager"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise EngineArgumentError(f"{name} must be True, False or None, got {value!r}")
        if self.hf_overrides is not None and not isinstance(self.hf_overrides, dict):
            raise EngineArgumentError(f"hf_overrides must be a dict, got {type(self.hf_overrides).__name__}")
        if self.max_num_batched_tokens and self.max_model_len and self.max_num_batched_tokens < self.max_model_len:
            raise EngineArgumentError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_model_len "
                f"({self.max_model_len}): a pooling request cannot be split across engine steps"
            )

    def check_engine_kwargs(self, known_fields: set[str]) -> None:
        """Reject pass-through keys that ``vllm.EngineArgs`` does not know (typos, wrong version)."""
        ours = {f.name for f in dataclasses.fields(self)} - {"engine_kwargs"}
        for key in self.engine_kwargs:
            if key in ours:
                raise EngineArgumentError(f"{key} is a named argument; pass it as {key}=..., not in engine_kwargs")
            if key not in known_fields:
                import difflib

                close = difflib.get_close_matches(key, sorted(known_fields), n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise EngineArgumentError(f"unknown vLLM engine argument {key!r}.{hint}")

    def to_engine_args(self) -> dict[str, Any]:
        """The keyword arguments for ``vllm.LLM``, ``None`` values left for vLLM to choose."""
        # The template's score head first, so an explicit hf_overrides entry still wins.
        hf_overrides = {**(self.score_template.hf_overrides() if self.score_template is not None else {}),
                        **(self.hf_overrides or {})}
        if self.head_dtype is not None:
            hf_overrides["head_dtype"] = self.head_dtype
        args: dict[str, Any] = {
            "model": self.model,
            "revision": self.revision,
            "runner": "pooling",
            "convert": self.convert,
            "trust_remote_code": self.trust_remote_code,
            "dtype": self.dtype,
            "max_model_len": self.max_model_len,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "max_num_seqs": self.max_num_seqs,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enable_prefix_caching": self.enable_prefix_caching,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "hf_overrides": hf_overrides or None,
            "pooler_config": self.pooler_config,
            "enforce_eager": self.enforce_eager,
        }
        args = {k: v for k, v in args.items() if v is not None}
        args.update(self.engine_kwargs)
        return args


def engine_arguments() -> list[dataclasses.Field]:
    """The :class:`EngineConfig` fields a user sets by name, in declaration order (the ones with help text)."""
    return [f for f in dataclasses.fields(EngineConfig) if f.metadata.get("help")]


def split_engine_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the :class:`EngineConfig` fields among a wrapper's keyword arguments, the rest: vLLM pass-through, checked
    against ``vllm.EngineArgs`` before the engine starts)."""
    names = {f.name for f in engine_arguments()}
    return ({k: v for k, v in kwargs.items() if k in names}, {k: v for k, v in kwargs.items() if k not in names})


def engine_arguments_doc(indent: str = "        ") -> str:
    """The engine arguments as the ``Args:`` entries of a docstring (the wrappers' docstring is built from it)."""
    import textwrap

    lines = []
    for f in engine_arguments():
        text = f"{f.name}: {f.metadata['help']}"
        lines += textwrap.wrap(text, 116 - len(indent), initial_indent=indent, subsequent_indent=indent + "    ")
    return "\n".join(lines)
