"""Input checks, tokenization and truncation, done once in the wrapper so every backend sees the same tokens.

Over-long inputs are truncated to the model's length, never sent to the engine (vLLM rejects them with
an error that would end a multi-hour run), and every truncation is counted and logged. Inputs that are not
text are refused with their position, never turned into the text of their ``repr``.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from typing import Any

from .backends.base import TokenizedInput

logger = logging.getLogger(__name__)

#: A fast tokenizer keeps its truncation setting as state, and two threads calling it with different
#: settings fail with "Already borrowed"; a wrapper shared by threads tokenizes one call at a time.
_TOKENIZER_LOCK = threading.RLock()


def _serialized(fn):
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with _TOKENIZER_LOCK:
            return fn(*args, **kwargs)
    return locked


@dataclass
class TruncationReport:
    """How many inputs of one call were cut to fit the model."""

    total: int = 0
    truncated: int = 0
    max_len: int = 0
    longest: int = 0

    def log(self, what: str, model: str) -> None:
        if self.truncated:
            logger.warning("%s: %d of %d %s were longer than %d tokens (longest %d) and were truncated",
                           model, self.truncated, self.total, what, self.max_len, self.longest)


def check_texts(texts: list[Any], what: str = "input") -> list[str]:
    """``texts`` if every item is a ``str`` of valid Unicode; otherwise an error naming the first bad one.

    Why: ``str(None)`` is "None" and ``str(b"abc")`` is "b'abc'"; encoding those silently scores garbage.
    A lone surrogate ("\\ud800", left by a broken decode) fails deep inside the tokenizer without saying
    which input it was.
    """
    from .errors import InvalidInputError

    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(
                f"{what} {i} is {type(text).__name__} {_preview(text)}, not str; every {what} must be a string "
                "(decode bytes first, replace None with '')")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInputError(
                    f"{what} {i} is not valid Unicode ({exc.reason} at position {exc.start}: {_preview(text)}); "
                    "clean it, e.g. text.encode('utf-8', 'replace').decode('utf-8')") from None
    return texts


def _preview(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width] + "..."


def _fallback_token(tokenizer: Any) -> int:
    for attr in ("eos_token_id", "pad_token_id", "unk_token_id", "bos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


@_serialized
def tokenize_texts(tokenizer: Any, texts: list[str], max_len: int) -> tuple[list[TokenizedInput], TruncationReport]:
    """Token ids of each text with the tokenizer's special tokens, cut to ``max_len`` tokens.

    Truncation goes through the tokenizer (``truncation=True``) so special tokens such as [SEP] or a
    trailing EOS survive, exactly as in sentence-transformers. A text that tokenizes to nothing (an
    empty string on a tokenizer without special tokens) becomes one EOS/PAD token: vLLM cannot pool
    zero tokens.
    """
    report = TruncationReport(total=len(texts), max_len=max_len)
    if not texts:
        return [], report
    ids = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    long_rows = [i for i, row in enumerate(ids) if len(row) > max_len]
    if long_rows:
        report.truncated = len(long_rows)
        report.longest = max(len(ids[i]) for i in long_rows)
        cut = tokenizer([texts[i] for i in long_rows], add_special_tokens=True, truncation=True,
                        max_length=max_len)["input_ids"]
        for i, row in zip(long_rows, cut):
            ids[i] = row
    filler = _fallback_token(tokenizer)
    return [TokenizedInput(list(row) if row else [filler]) for row in ids], report


@_serialized
def tokenize_pairs(tokenizer: Any, first: list[str], second: list[str], max_len: int,
                   ) -> tuple[list[TokenizedInput], TruncationReport]:
    """Cross-encoder inputs ``[CLS] q [SEP] d [SEP]`` with token type ids, truncated as the reference does.

    sentence-transformers' ``CrossEncoder`` (mteb's reference for these models) tokenizes pairs with
    ``truncation=True``, which is longest-first: tokens come off the longer side, one at a time, until the pair
    fits. Usually that is the document; a query longer than the document loses tokens too. Doing the same keeps
    scores of long pairs equal to the reference (tested with queries that take half the budget).
    """
    report = TruncationReport(total=len(first), max_len=max_len)
    if not first:
        return [], report
    enc = tokenizer(first, second, add_special_tokens=True, truncation=False, verbose=False)
    ids, types = enc["input_ids"], enc.get("token_type_ids")
    texts = [(q, d) for q, d in zip(first, second)]
    long_rows = [i for i, row in enumerate(ids) if len(row) > max_len]
    if long_rows:
        report.truncated = len(long_rows)
        report.longest = max(len(ids[i]) for i in long_rows)
        queries, docs = [first[i] for i in long_rows], [second[i] for i in long_rows]
        cut = tokenizer(queries, docs, add_special_tokens=True, truncation="longest_first", max_length=max_len,
                        verbose=False, return_offsets_mapping=bool(getattr(tokenizer, "is_fast", False)))
        for j, i in enumerate(long_rows):
            ids[i] = cut["input_ids"][j]
            if types is not None:
                types[i] = cut["token_type_ids"][j]
            if "offset_mapping" in cut:
                texts[i] = _surviving_texts(cut, j, queries[j], docs[j])
    filler = _fallback_token(tokenizer)
    out = []
    for i, row in enumerate(ids):
        type_row = list(types[i]) if types is not None else None
        out.append(TokenizedInput(list(row) if row else [filler], type_row if row else None, pair=texts[i]))
    return out, report


def _surviving_texts(encoding: Any, row: int, query: str, document: str) -> tuple[str, str]:
    """Each side of a truncated pair cut after its last kept token (from the fast tokenizer's offsets)."""
    sequence_ids = encoding.sequence_ids(row)
    offsets = encoding["offset_mapping"][row]
    ends = {0: 0, 1: 0}
    for seq, (_, end) in zip(sequence_ids, offsets):
        if seq is not None:
            ends[seq] = max(ends[seq], end)
    return query[:ends[0]], document[:ends[1]]


@_serialized
def tokenize_templated(tokenizer: Any, template: Any, queries: list[str], documents: list[str],
                       instructions: list[str | None], max_len: int,
                       ) -> tuple[list[TokenizedInput], TruncationReport]:
    """LLM-reranker inputs ``prefix + pair_format(...) + suffix`` as token ids, cutting only the document.

    The prefix and suffix are tokenized on their own and the pair text in one piece, as mteb's Qwen3
    reference does, so untruncated inputs are token-for-token the reference's. When a pair is too long,
    the tokens that overlap the document's character span are cut from its end (offsets from the fast
    tokenizer); only if the document is gone and it still does not fit is the pair text cut from its end.
    """
    from .errors import EngineArgumentError

    limit = min(max_len, template.max_length or max_len)
    prefix = tokenizer.encode(template.prefix, add_special_tokens=False) if template.prefix else []
    suffix = tokenizer.encode(template.suffix, add_special_tokens=False) if template.suffix else []
    budget = limit - len(prefix) - len(suffix)
    report = TruncationReport(total=len(queries), max_len=limit)
    if budget < 1:
        raise EngineArgumentError(
            f"the score template's prefix and suffix take {len(prefix) + len(suffix)} tokens, more than the "
            f"model's {limit}-token limit; raise max_model_len or shorten the template"
        )
    if not queries:
        return [], report
    rendered = [template.render(q, d, i) for q, d, i in zip(queries, documents, instructions)]
    enc = tokenizer([r[0] for r in rendered], add_special_tokens=template.add_special_tokens, truncation=False,
                    return_offsets_mapping=True, verbose=False)
    out: list[TokenizedInput] = []
    for row, offsets, (_, doc_start, doc_end) in zip(enc["input_ids"], enc["offset_mapping"], rendered):
        row = list(row)
        if len(row) > budget:
            report.truncated += 1
            report.longest = max(report.longest, len(row) + len(prefix) + len(suffix))
            excess = len(row) - budget
            doc = [j for j, (s, e) in enumerate(offsets) if e > s and s < doc_end and e > doc_start]
            if doc and len(doc) >= excess:
                end = doc[-1] + 1
                row = row[:end - excess] + row[end:]
            else:
                dropped = set(doc)
                row = [t for j, t in enumerate(row) if j not in dropped][:budget]
        out.append(TokenizedInput(prefix + row + suffix))
    return out, report
