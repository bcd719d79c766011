"""What the parity suite measures, shared by the setup tests (test_model_zoo.py) and the registry tests
(test_registry_zoo.py): the token ids that reach each model, the vectors' agreement, mteb main scores, the
recorded outcomes, and a guard that makes any engine start an error where none may happen.

Only the public API is used on our side: ``VllmEncoderWrapper`` / ``VllmCrossEncoderWrapper`` and the backend
seam (``mteb_vllm.backends.BACKENDS``, ``Backend.pool``), so the suite holds for any implementation behind it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mteb_vllm.backends import BackendLayer

#: When set, every setup and registry test writes its outcome into this JSON file (scripts/model_support.py).
OUTCOMES_ENV = "MTEB_VLLM_ZOO_OUTCOMES"

MAX_ONE_MINUS_COS = 1e-5
MAX_NORM_ERROR = 1e-5  # |‖ours‖ / ‖reference‖ − 1|: cosine cannot see a per-row scale (mean vs sqrt pooling)
MAX_MAIN_SCORE_DELTA = 1e-4
MAX_SCORE_DELTA = 1e-5  # cross-encoder scores, with the saved activation


# --- outcomes ------------------------------------------------------------------------------------------------
def record_outcome(key: str, section: str, **fields: Any) -> None:
    """Merge one outcome into the JSON file named by ``MTEB_VLLM_ZOO_OUTCOMES`` (no-op when unset). Written after
    every test, so an interrupted run keeps what it measured."""
    path = os.environ.get(OUTCOMES_ENV)
    if not path:
        return
    target = Path(path)
    data = json.loads(target.read_text()) if target.exists() else {}
    data.setdefault(section, {})[key] = {k: v for k, v in fields.items() if v is not None}
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".outcomes-")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, target)


class Outcome:
    """Collects one test's figures; ``record`` writes them whatever happened (failure, refusal, error)."""

    def __init__(self, key: str, section: str):
        self.key, self.section = key, section
        self.fields: dict[str, Any] = {"result": "error"}

    def set(self, **fields: Any) -> None:
        self.fields.update(fields)

    @contextlib.contextmanager
    def recording(self) -> Iterator[Outcome]:
        try:
            yield self
        except BaseException as exc:
            from mteb_vllm.errors import UnsupportedModelError

            if isinstance(exc, UnsupportedModelError):  # refused where the suite expects exact: the table says so
                self.fields.update(result="refused", reason=str(exc).splitlines()[0][:300])
            elif self.fields.get("result") == "error" and "reason" not in self.fields:
                self.fields["reason"] = f"{type(exc).__name__}: {exc}"[:400]
            raise
        finally:
            record_outcome(self.key, self.section, **self.fields)


# --- figures -------------------------------------------------------------------------------------------------
def row_agreement(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Per-row 1 - cos and relative norm error, worst rows. Shapes must already agree."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    n_ours, n_ref = np.linalg.norm(ours, axis=1), np.linalg.norm(ref, axis=1)
    cos = (ours * ref).sum(1) / np.maximum(n_ours * n_ref, 1e-300)
    return {"max_one_minus_cos": float(np.max(1.0 - cos)), "max_norm_error": float(np.max(np.abs(n_ours / n_ref - 1)))}


def main_score(model: Any, task: Any) -> float:
    import mteb

    result = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
    return float(result.task_results[0].get_score())


def sts_task() -> Any:
    from mteb_vllm.demo import MtebVllmDemoSTS

    return MtebVllmDemoSTS()


def retrieval_task() -> Any:
    from mteb_vllm.demo import MtebVllmDemoRetrieval

    return MtebVllmDemoRetrieval()


def text_loader(texts: list[str]) -> Any:
    from datasets import Dataset
    from torch.utils.data import DataLoader

    return DataLoader(Dataset.from_dict({"text": list(texts)}), batch_size=32)


# --- token ids: the reference's ----------------------------------------------------------------------------
def hf_model_of(st_model: Any) -> Any:
    """The Hugging Face model inside a SentenceTransformer's first module (what the token ids go into)."""
    first = st_model[0]
    for name in ("auto_model", "model"):
        inner = getattr(first, name, None)
        if inner is not None:
            return inner
    raise AttributeError(f"no Hugging Face model in {type(first).__name__}")


@contextlib.contextmanager
def captured_inputs(hf_model: Any, *, compute: bool = True) -> Iterator[list[tuple[int, ...]]]:
    """Every row of input ids the model's forward receives, without padding, as tuples. sentence-transformers 6
    calls ``model.forward`` directly (no module hooks run), so the bound method is wrapped on the instance.
    ``compute=False`` skips the forward pass and answers zeros (only the ids are wanted: the fast tier)."""
    import functools

    rows: list[tuple[int, ...]] = []
    original = hf_model.forward

    @functools.wraps(original)
    def forward(*args: Any, **kwargs: Any) -> Any:
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        for r in range(ids.shape[0]):
            row = ids[r] if mask is None else ids[r][mask[r].bool()]
            rows.append(tuple(int(t) for t in row.tolist()))
        if not compute:
            import torch

            return {"last_hidden_state": torch.zeros(*ids.shape, hf_model.config.hidden_size)}
        return original(*args, **kwargs)

    hf_model.forward = forward
    try:
        yield rows
    finally:
        del hf_model.forward


# --- token ids: ours, at the backend seam, with no engine ---------------------------------------------------
class EngineStartBlocked(AssertionError):
    """Raised where an engine start was about to happen in a test that must not start one."""


@contextlib.contextmanager
def no_engine_start() -> Iterator[None]:
    """Make every start of the in-process engine (and a vLLM ``LLM``, if vLLM is already imported) raise."""
    import sys

    from mteb_vllm.backends import local

    def blocked(*_a: Any, **_k: Any) -> None:
        raise EngineStartBlocked("an engine was about to start")

    saved = [(local.LocalVllmBackend, "start", local.LocalVllmBackend.start),
             (local.LocalVllmBackend, "_start", local.LocalVllmBackend._start)]
    vllm = sys.modules.get("vllm")
    if vllm is not None and hasattr(vllm, "LLM"):
        saved.append((vllm, "LLM", vllm.LLM))
    for owner, name, _ in saved:
        setattr(owner, name, blocked)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def expect_refused(outcome: Outcome, build: Any, reason: str) -> None:
    """``build()`` (a wrapper's construction, closed again) must raise UnsupportedModelError before any engine
    start; the outcome records the refusal's first line, or the test fails saying what happened instead."""
    import pytest

    from mteb_vllm.errors import UnsupportedModelError

    with outcome.recording(), no_engine_start():
        try:
            build()
        except UnsupportedModelError as exc:
            outcome.set(result="refused", reason=str(exc).splitlines()[0][:300])
        except EngineStartBlocked:
            outcome.set(result="error", reason="not refused: an engine was about to start")
            pytest.fail(f"{outcome.key}: no UnsupportedModelError before the engine start ({reason})")
        else:
            outcome.set(result="error", reason="accepted without an engine start")
            pytest.fail(f"{outcome.key}: accepted; expected UnsupportedModelError ({reason})")


class SpyBackend(BackendLayer):
    """A backend that records every input the wrapper hands to the model (``Backend.pool``) and answers with
    FakeBackend's deterministic vectors. Everything else (tokenizer, context length, dtype, revision, and any
    attribute an implementation asks of its backend) comes from the local backend the wrapper would have started,
    created with ``lazy=True`` and never started: use it inside :func:`no_engine_start`.

    Register it as ``BACKENDS["zoo-spy"]`` and pass ``backend="zoo-spy"``; :attr:`last` is the newest instance.
    """

    last: SpyBackend | None = None

    def __init__(self, config: Any, **options: Any):
        from mteb_vllm.backends import create_backend
        from mteb_vllm.testing import FakeBackend

        from mteb_vllm.checkpoint import config_json

        options["lazy"] = True
        self.inner, _ = create_backend("local", config, **options)
        hf = config_json(config.model, config.revision) or {}
        hidden = hf.get("hidden_size") or (hf.get("text_config") or {}).get("hidden_size") or hf.get("d_model") or 64
        # the engine's width (the hidden size): the model's own modules run on what it returns
        self.fake = FakeBackend(config, dim=int(hidden), max_model_len=10**9, num_labels=1)
        self.recorded: list[tuple[str, Any]] = []
        SpyBackend.last = self

    def pool(self, inputs: list[Any], task: str, *, desc: str = "") -> np.ndarray:
        self.recorded.extend((task, item) for item in inputs)
        if task not in ("embed", "classify", "token_embed"):
            raise NotImplementedError(f"SpyBackend answers 'embed', 'token_embed' and 'classify', not {task!r}: "
                                      "extend it to return what the engine returns for that task")
        return self.fake.pool(inputs, task, desc=desc)

    def token_ids(self, task: str | None = None) -> set[tuple[int, ...]]:
        return {tuple(item.token_ids) for t, item in self.recorded if task is None or t == task}

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "fake", "recorded"):
            raise AttributeError(name)
        return getattr(self.inner, name)


@contextlib.contextmanager
def spy_backend_registered() -> Iterator[str]:
    """``backend="zoo-spy"`` builds a :class:`SpyBackend` while the block runs."""
    from mteb_vllm.backends import BACKENDS

    BACKENDS["zoo-spy"] = SpyBackend  # type: ignore[assignment]
    try:
        yield "zoo-spy"
    finally:
        BACKENDS.pop("zoo-spy", None)


@contextlib.contextmanager
def recorded_pool_inputs(backend: Any) -> Iterator[list[tuple[str, Any]]]:
    """Every input a running backend's ``pool`` receives while the block runs (the wrapper-to-engine seam)."""
    calls: list[tuple[str, Any]] = []
    original = backend.pool

    def pool(inputs: list[Any], task: str, *args: Any, **kwargs: Any) -> Any:
        calls.extend((task, item) for item in inputs)
        return original(inputs, task, *args, **kwargs)

    backend.pool = pool
    try:
        yield calls
    finally:
        del backend.pool


def reference_token_ids(st_model: Any, texts: list[str], prompt: str | None = None) -> set[tuple[int, ...]]:
    """The ids sentence-transformers feeds its model for ``texts`` (``preprocess``, the tokenization ``encode``
    runs per batch), without padding: cheap, no forward pass."""
    features = st_model.preprocess(texts, prompt=prompt)
    ids, mask = features["input_ids"], features["attention_mask"]
    return {tuple(int(t) for t in ids[r][mask[r].bool()].tolist()) for r in range(ids.shape[0])}


def describe_difference(ours: set[tuple[int, ...]], ref: set[tuple[int, ...]], limit: int = 2) -> str:
    """A short account of how two sets of token-id rows differ (for assertion messages and outcomes)."""
    if not ours:
        return ("no input reached Backend.pool: if the wrapper now feeds the engine some other way, move the "
                "suite's spies (zoo_checks.SpyBackend, recorded_pool_inputs) to that seam")
    missing, extra = sorted(ref - ours, key=len), sorted(ours - ref, key=len)
    parts = [f"{len(missing)} reference rows not sent, {len(extra)} rows sent that the reference never saw"]
    for row in missing[:limit]:
        parts.append(f"reference ({len(row)} ids): {list(row[:8])}...{list(row[-4:])}")
    for row in extra[:limit]:
        parts.append(f"ours ({len(row)} ids): {list(row[:8])}...{list(row[-4:])}")
    return "; ".join(parts)
