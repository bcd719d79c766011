"""``FakeBackend``: a deterministic stand-in for an inference engine, behind the real :class:`Backend` seam.

Why its vectors are not random: a fake whose outputs mean nothing can only test plumbing. Here an embedding
is the hashed bag of the input's token unigrams and bigrams (L2-normalised), so texts that share words are
close, mteb's STS and retrieval evaluators give sensible scores, and a test can tell a prompt that reached
the model from one that did not. A pair's score is the similarity of its two segments (split at the BERT
segment ids, as a cross-encoder sees them). Every output is a pure function of the token ids of that one
input: batching, ordering, deduplication, caching and remote fan-out cannot change a bit of it, which is
exactly what tests of those features need to assert.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.protocol import BackendInfo, BaseBackend, PoolingTask, TokenizedInput
from ..precision import canonical

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


@functools.lru_cache(maxsize=1)
def byte_tokenizer() -> Any:
    """A Hugging Face fast tokenizer built in memory: one token per UTF-8 byte, BERT-style [CLS]/[SEP] and
    segment ids. It has the real tokenizer API (pairs, truncation strategies, offsets), needs no files, and
    any text, in any script, tokenizes without unknown tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        model_max_length=10**9, model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def _round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values as they come out of an engine computing in ``dtype`` (rounded to its mantissa)."""
    if dtype == "float16":
        return values.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        bits = values.astype(np.float32).view(np.uint32)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000  # round to nearest even
        return rounded.astype(np.uint32).view(np.float32)
    return values.astype(np.float32)


def _features(ids: np.ndarray, dim: int) -> np.ndarray:
    """Hashed, signed bag of unigrams and bigrams of ``ids``, L2-normalised (zero vector for no ids)."""
    out = np.zeros(dim, dtype=np.float64)
    if ids.size == 0:
        return out.astype(np.float32)
    grams = [ids.astype(np.uint64)]
    if ids.size > 1:
        grams.append(ids[:-1].astype(np.uint64) * np.uint64(1_000_003) + ids[1:].astype(np.uint64) + np.uint64(7))
    with np.errstate(over="ignore"):
        for gram in grams:
            h = (gram * np.uint64(0x9E3779B97F4A7C15)) & _MASK
            h ^= h >> np.uint64(29)
            h = (h * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
            buckets = (h % np.uint64(dim)).astype(np.int64)
            signs = np.where((h >> np.uint64(63)) == 1, -1.0, 1.0)
            np.add.at(out, buckets, signs)
    norm = np.linalg.norm(out)
    return (out / norm if norm else out).astype(np.float32)


#: Hidden size of :func:`fake_model_folder`'s model: FakeBackend's default width.
FAKE_HIDDEN = 64


@functools.lru_cache(maxsize=1)
def fake_model_folder() -> str:
    """A weightless sentence-transformers folder (a tiny BERT config, :func:`byte_tokenizer`, mean pooling):
    what the wrappers read when a fake backend is given a model name that has no files anywhere, so wrapper
    logic can be tested with any name and no checkpoint. Written once per process, in the temp folder."""
    import json
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="mteb-vllm-fake-model-"))
    config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": FAKE_HIDDEN,
              "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 2 * FAKE_HIDDEN,
              "max_position_embeddings": 8192, "vocab_size": 300, "type_vocab_size": 2, "pad_token_id": 0}
    (folder / "config.json").write_text(json.dumps(config))
    byte_tokenizer().save_pretrained(str(folder))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = 128
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": FAKE_HIDDEN, "pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    return str(folder)


@dataclass(frozen=True)
class PoolCall:
    task: str
    inputs: int
    tokens: int


class FakeBackend(BaseBackend):
    """Deterministic hash-based embeddings and scores (see the module docstring).

    Args:
        config: The wrapper's :class:`~mteb_vllm.config.EngineConfig` (model name, dtype, max_model_len).
        dim: Embedding width.
        num_labels: Width of classify outputs (1: a relevance score; 2: [P(not relevant), P(relevant)]).
        max_model_len: Token limit (default: the config's, else 128). Longer inputs raise, as vLLM does: a
            wrapper that forgets to truncate fails here.
        tokenizer: A Hugging Face tokenizer (default :func:`byte_tokenizer`).
        auto_dtype: What ``dtype="auto"`` resolves to (default float32).
        nonfinite_dtypes: Precisions in which the model overflows: the first row of every output is NaN, as an
            overflow leaves it (or only the rows of ``nonfinite_texts``).
        nonfinite_texts: Overflow only on inputs whose text contains one of these strings (in the precisions of
            ``nonfinite_dtypes``, default: both half precisions), as a model whose activations outgrow a half
            precision on some inputs only. The check decodes the token ids, so it sees prompts and truncation.
        seconds_per_token: Simulated compute time, for timeouts and load tests.
        fail_on_call: Raise ``RuntimeError`` on this pool call (1-based), as a crashing engine would.
    """

    kind = "fake"

    def __init__(self, config: Any = None, *, dim: int = 64, num_labels: int = 1, max_model_len: int | None = None,
                 tokenizer: Any = None, auto_dtype: str = "float32", nonfinite_dtypes: tuple[str, ...] = (),
                 nonfinite_texts: tuple[str, ...] = (), seconds_per_token: float = 0.0, fail_on_call: int | None = None, revision: str | None = None,
                 lazy: bool = False):
        self.model = getattr(config, "model", None) or "fake-model"
        requested = canonical(getattr(config, "dtype", None) or "auto")
        self.dtype = canonical(auto_dtype) if requested == "auto" else requested
        self.max_model_len = int(max_model_len or getattr(config, "max_model_len", None) or 128)
        self.dim, self.num_labels = dim, num_labels
        self.revision = revision or getattr(config, "revision", None) or "fake"
        self._tokenizer = tokenizer
        self.nonfinite_texts = tuple(nonfinite_texts)
        if self.nonfinite_texts and not nonfinite_dtypes:
            nonfinite_dtypes = ("float16", "bfloat16")
        self.nonfinite_dtypes = {canonical(d) for d in nonfinite_dtypes}
        self.seconds_per_token = seconds_per_token
        self.fail_on_call = fail_on_call
        self.calls: list[PoolCall] = []
        self.closed = False
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = byte_tokenizer()
        elif isinstance(self._tokenizer, str):
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer)
        return self._tokenizer

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(kind=self.kind, model=self.model, revision=self.revision, dtype=self.dtype,
                           max_model_len=self.max_model_len, details={"dim": self.dim})

    @property
    def inputs_seen(self) -> int:
        """Inputs pooled so far, over every call: what a test counts to prove work was (not) done."""
        return sum(c.inputs for c in self.calls)

    def embed_one(self, item: TokenizedInput) -> np.ndarray:
        return _features(np.asarray(item.token_ids, dtype=np.int64), self.dim)

    def token_rows(self, item: TokenizedInput) -> np.ndarray:
        """One row per token: the features of the token and the one before it."""
        ids = np.asarray(item.token_ids, dtype=np.int64)
        return np.stack([_features(ids[max(0, i - 1):i + 1], self.dim) for i in range(ids.size)])

    def score_one(self, item: TokenizedInput) -> np.ndarray:
        ids = np.asarray(item.token_ids, dtype=np.int64)
        start = item.second_segment_start
        if start is not None:
            similarity = float(_features(ids[:start], self.dim) @ _features(ids[start:], self.dim))
        else:  # one segment (an LLM reranker's prompt): a fixed projection of its features
            direction = _features(np.arange(1, 9, dtype=np.int64), self.dim)
            similarity = float(_features(ids, self.dim) @ direction)
        p = (similarity + 1.0) / 2.0
        if self.num_labels == 1:
            return np.asarray([similarity], dtype=np.float32)
        if self.num_labels == 2:
            return np.asarray([1.0 - p, p], dtype=np.float32)
        return np.asarray([p] + [(1.0 - p) / (self.num_labels - 1)] * (self.num_labels - 1), dtype=np.float32)

    def pool(self, inputs: list[TokenizedInput], task: PoolingTask, *, desc: str = "") -> np.ndarray:
        if self.closed:
            raise RuntimeError("this backend was closed")
        with self._lock:
            tokens = sum(len(item) for item in inputs)
            self.calls.append(PoolCall(task, len(inputs), tokens))
            if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
                raise RuntimeError(f"fake engine failure on call {self.fail_on_call}")
            for i, item in enumerate(inputs):
                if not item.token_ids:
                    raise ValueError(f"input {i} has no tokens (vLLM cannot pool an empty prompt)")
                if len(item) > self.max_model_len:
                    raise ValueError(f"input {i} has {len(item)} tokens, more than max_model_len={self.max_model_len}")
            if self.seconds_per_token:
                time.sleep(tokens * self.seconds_per_token)
        width = self.dim if task in ("embed", "token_embed") else self.num_labels
        if not inputs:
            return np.zeros((0, width), dtype=np.float32)
        if task == "token_embed":
            out = _round_to(np.concatenate([self.token_rows(item) for item in inputs]), self.dtype)
        else:
            one = self.embed_one if task == "embed" else self.score_one
            out = _round_to(np.stack([one(item) for item in inputs]), self.dtype)
        if self.dtype in self.nonfinite_dtypes:
            if not self.nonfinite_texts:
                out[0] = np.nan
            for i, item in enumerate(inputs):
                if self.nonfinite_texts and any(t in self.tokenizer.decode(item.token_ids) for t in self.nonfinite_texts):
                    out[i] = np.nan
        return out

    def close(self) -> None:
        self.closed = True
