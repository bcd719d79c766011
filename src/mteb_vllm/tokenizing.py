"""Input checks, truncation reports, and the LLM rerankers' templated tokenization.

Embedding models and sentence-transformers cross-encoders are tokenized by sentence-transformers itself (the
reference; see :mod:`mteb_vllm.st_model`). What stays here: the checks every input passes first (inputs that are
not text are refused with their position, never turned into the text of their ``repr``), the count of inputs cut
to the model's length (logged, never silent), and the score-template tokenization of LLM rerankers, whose
reference (mteb's Qwen3 wrapper) is not a sentence-transformers model.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from typing import Any

from .backends.protocol import TokenizedInput

logger = logging.getLogger(__name__)

#: A fast tokenizer keeps its truncation setting as state, and two threads calling it with different
#: settings fail with "Already borrowed"; a wrapper shared by threads tokenizes one call at a time.
TOKENIZER_LOCK = threading.RLock()


def _serialized(fn):
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with TOKENIZER_LOCK:
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
