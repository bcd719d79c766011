"""Score templates: how an LLM reranker sees a (query, document) pair and which tokens carry its score.

Why this exists: a causal LM used as a reranker (Qwen3-Reranker, mxbai-rerank-v2, bge-reranker-v2-gemma)
is not trained on ``[CLS] q [SEP] d [SEP]``. It reads a chat-style prompt with an instruction and answers
"yes" or "no"; the relevance score is P(yes) from those two logits. mteb's own vLLM wrapper has no way to
express this ("TODO: support score prompt"), so such models could not be evaluated through it.

vLLM already knows how to turn the LM head into a score head: with ``classifier_from_token=[no, yes]`` and
``method="from_2_way_softmax"`` the classifier weight becomes ``W[yes] - W[no]`` and the pooled output is
``sigmoid(logit_yes - logit_no)``, which equals the two-way softmax probability of "yes" that the reference
implementations compute. The template supplies the text around the pair and those tokens.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

from .errors import EngineArgumentError


@dataclass(frozen=True)
class ScoreTemplate:
    """The prompt and score tokens of an LLM reranker.

    Args:
        pair_format: Text of one pair with ``{query}``, ``{document}`` and optionally ``{instruction}``.
        prefix: Text before the pair (a system prompt); tokenized on its own, as the reference does.
        suffix: Text after the pair (the assistant turn opening); tokenized on its own.
        default_instruction: Used when the task gives no per-query instruction.
        true_token: Token whose logit means "relevant".
        false_token: Token whose logit means "not relevant"; ``None`` scores from ``true_token`` alone
            (vLLM's "no_post_processing", e.g. bge-reranker-v2-gemma's "Yes").
        max_length: Token limit of the whole prompt in the reference implementation (``None``: the
            engine's max_model_len). Matching it keeps long-document scores equal to the reference.
        add_special_tokens: Whether the pair text is tokenized with the tokenizer's special tokens
            (mteb's Qwen3 wrapper does; Qwen's tokenizer adds none, so it is a no-op there).
    """

    pair_format: str
    prefix: str = ""
    suffix: str = ""
    default_instruction: str | None = None
    true_token: str = "yes"
    false_token: str | None = "no"
    max_length: int | None = None
    add_special_tokens: bool = True
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        fields = {f for _, f, _, _ in string.Formatter().parse(self.pair_format) if f is not None}
        missing = {"query", "document"} - fields
        unknown = fields - {"query", "document", "instruction"}
        if missing or unknown:
            raise EngineArgumentError(
                f"ScoreTemplate.pair_format must contain {{query}} and {{document}} (and may contain "
                f"{{instruction}}); missing {sorted(missing)}, unknown {sorted(unknown)} in {self.pair_format!r}"
            )
        if not self.true_token:
            raise EngineArgumentError("ScoreTemplate.true_token must be a token of the model's vocabulary")
        if self.max_length is not None and self.max_length < 8:
            raise EngineArgumentError(f"ScoreTemplate.max_length must be a token count >= 8, got {self.max_length}")

    @property
    def uses_instruction(self) -> bool:
        return "{instruction}" in self.pair_format

    def render(self, query: str, document: str, instruction: str | None = None) -> tuple[str, int, int]:
        """The pair text and the character span of the document inside it (for document-only truncation)."""
        instruction = instruction if instruction is not None else (self.default_instruction or "")
        marker = "\x00DOC\x00"
        shell = self.pair_format.format(query=query, document=marker, instruction=instruction)
        start = shell.index(marker)
        text = shell[:start] + document + shell[start + len(marker):]
        return text, start, start + len(document)

    def hf_overrides(self) -> dict[str, Any]:
        """vLLM config overrides that turn the causal LM's head into this template's score head."""
        if self.false_token is None:
            return {"classifier_from_token": [self.true_token], "method": "no_post_processing"}
        return {"classifier_from_token": [self.false_token, self.true_token], "method": "from_2_way_softmax"}


#: Qwen3-Reranker, exactly as mteb's ``Qwen3RerankerWrapper`` (and the Qwen reference code) prompts it.
QWEN3_RERANKER = ScoreTemplate(
    name="qwen3-reranker",
    prefix=(
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
        'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    ),
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    pair_format="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    default_instruction="Given the user query, retrieval the relevant passages",
    true_token="yes",
    false_token="no",
    max_length=8192,
)

#: Templates by their own name (the CLI's ``--template``).
TEMPLATES_BY_NAME: dict[str, ScoreTemplate] = {t.name: t for t in (QWEN3_RERANKER,)}

#: Templates by the name of the mteb loader that implements the reference, so a registry model
#: (``mteb.get_model_meta(name).loader``) maps to its template with no configuration.
TEMPLATES_BY_LOADER: dict[str, ScoreTemplate] = {
    "Qwen3RerankerWrapper": QWEN3_RERANKER,
}


def registry_template(meta: Any) -> ScoreTemplate | None:
    """The score template of an mteb registry model, or None for plain cross-encoders / unknown loaders."""
    loader = getattr(meta, "loader", None)
    if loader is None:
        return None
    name = getattr(loader, "__name__", type(loader).__name__)
    return TEMPLATES_BY_LOADER.get(name)
