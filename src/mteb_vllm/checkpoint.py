"""What a checkpoint is, read from its files before any engine starts.

Why one module: the CPU defaults (step budget, KV cache size), the FLOP count of the benchmark, the reranker's
context cap and the preflight checks all need the same few facts about a model (its config, context length,
shape, whether it needs custom code or has a classifier head). Reading them here once keeps those callers from
parsing ``config.json`` each in its own way, and keeps ``flops`` and ``cpu_defaults`` free of each other. Which
revision a checkpoint is (a folder's content hash, a hub commit) is run identity: :mod:`mteb_vllm.identity`.

Nothing here imports vLLM or torch; transformers and huggingface_hub are imported lazily.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from .errors import ModelNotFoundError

logger = logging.getLogger(__name__)

# --- where the model lives ------------------------------------------------------------------------------
def is_local_path(model: str) -> bool:
    """True for something that names a folder on disk rather than a hub id ``org/name``."""
    return model.startswith((os.sep, ".", "~")) or model.count("/") > 1 or os.path.exists(os.path.expanduser(model))


def check_model_exists(model: str) -> str:
    """Expand a local path and fail fast when it does not exist (hub ids pass through unchanged)."""
    expanded = os.path.expanduser(model)
    if is_local_path(model) and not os.path.exists(expanded):
        raise ModelNotFoundError(
            f"model path {model!r} does not exist. Pass an existing local directory with config.json, "
            "or a Hugging Face model id such as 'sentence-transformers/all-MiniLM-L6-v2'."
        )
    return expanded if os.path.exists(expanded) else model


def hub_file(model: str, filename: str, revision: str | None = None) -> str | None:
    """Local path of ``filename`` of a model: in its folder, or from the Hugging Face cache / hub.

    Returns None when the model has no such file or it cannot be had (offline and not cached). Hub downloads
    follow huggingface_hub's own rules (``HF_HUB_OFFLINE=1`` reads the cache only), as the reference would.
    """
    if is_local_path(model):
        path = os.path.join(os.path.expanduser(model), filename)
        return path if os.path.isfile(path) else None
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(model, filename, revision=revision)
    except Exception as exc:  # missing file, offline without a cached copy, gated repo, no network
        logger.debug("no %s for %s@%s: %s", filename, model, revision, exc)
        return None


@functools.lru_cache(maxsize=64)
def read_json_file(model: str, filename: str, revision: str | None = None) -> dict[str, Any] | None:
    """A JSON file of the model (``config.json``, ``config_sentence_transformers.json`` ...), or None."""
    path = hub_file(model, filename, revision)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        logger.warning("could not read %s of %s: %s", filename, model, exc)
        return None
    return data if isinstance(data, dict) else None


def config_json(model: str, revision: str | None = None) -> dict[str, Any] | None:
    return read_json_file(model, "config.json", revision)


def needs_remote_code(model: str, revision: str | None = None) -> bool:
    """Whether the checkpoint can only be loaded with its own modelling code: it ships some (``auto_map`` in
    config.json) and transformers does not know its ``model_type``. A checkpoint that ships code for an
    architecture transformers has (gte-Qwen2's Qwen2) loads without it, as mteb's reference loads it."""
    config = config_json(model, revision) or {}
    if not config.get("auto_map"):
        return False
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        return config.get("model_type") not in CONFIG_MAPPING
    except ImportError:  # no transformers to ask: assume the code is needed
        return True


def architectures(model: str, revision: str | None = None) -> list[str]:
    return list((config_json(model, revision) or {}).get("architectures") or [])


#: Architectures vLLM cannot run, natively or through its Transformers backend, with why (measured on vLLM 0.32
#: and transformers 5.19: issue 16's survey). Checked before any engine starts, so the user gets this line instead
#: of vLLM's list of every supported architecture after its import.
ENGINE_UNSUPPORTED = {
    **{arch: "vLLM has no MPNet implementation, and its Transformers backend refuses MPNet because MPNet's attention "
             "(relative position bias) does not go through transformers' attention interface"
       for arch in ("MPNetModel", "MPNetForMaskedLM", "MPNetForSequenceClassification")},
    **{arch: "vLLM has no DistilBERT implementation, and its Transformers backend fails to start it (DistilBERT's "
             "attention does not go through transformers' attention interface)"
       for arch in ("DistilBertModel",)},
    "T5EncoderModel": "vLLM has no T5 encoder implementation, and its Transformers backend fails to start it (T5's "
                      "encoder takes no position ids)",
    "DebertaV2ForSequenceClassification": "vLLM has no DeBERTa-v2 implementation, and its Transformers backend "
                                          "rejects it",
}


def engine_unsupported(model: str, revision: str | None = None) -> str | None:
    """Why vLLM cannot run this checkpoint's architecture, or None when it may."""
    for arch in architectures(model, revision):
        if arch in ENGINE_UNSUPPORTED:
            return f"{arch}: {ENGINE_UNSUPPORTED[arch]}"
    return None


def has_classifier_head(model: str, revision: str | None = None) -> bool | None:
    """True for a sequence-classification checkpoint, False for a plain encoder/LM, None when unknown."""
    archs = architectures(model, revision)
    if not archs:
        return None
    return any(a.endswith(("ForSequenceClassification", "ForTokenClassification")) for a in archs)


@functools.lru_cache(maxsize=16)
def hf_text_config(model: str, trust_remote_code: bool = False, revision: str | None = None) -> Any:
    """The model's Hugging Face (text) config, read once per process, or None when it cannot be read."""
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(os.path.expanduser(model), trust_remote_code=trust_remote_code,
                                         revision=revision)
    except Exception:
        logger.debug("could not read the config of %s", model, exc_info=True)
        return None
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


#: Config keys vLLM reads the context length from (the smallest wins), as in its model-arch conversion.
_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len")


def model_context_length(model: str, *, trust_remote_code: bool = False, revision: str | None = None) -> int | None:
    """The context length to run ``model`` with, read the way vLLM derives it, or None when unreadable.

    sentence-transformers' ``max_seq_length`` wins (as in vLLM and as sentence-transformers truncates); else
    the smallest of the config's length keys, and for absolute position embeddings (BERT and kin) also the
    tokenizer's ``model_max_length`` (which is how RoBERTa's 514 positions become 512 usable tokens). RoPE
    scaling, which only lengthens the context, is not applied: the value is never above what vLLM derives, so
    it can be handed to vLLM as ``max_model_len`` and tokenization before the engine starts (lazy start, the
    cache) truncates exactly as the engine will accept.
    """
    st = read_json_file(model, "sentence_bert_config.json", revision) or {}
    if st.get("max_seq_length"):
        return int(st["max_seq_length"])
    cfg = hf_text_config(model, trust_remote_code, revision)
    if cfg is None:
        return None
    values = [int(v) for k in _LENGTH_KEYS if isinstance(v := getattr(cfg, k, None), (int, float)) and v > 0]
    if getattr(cfg, "position_embedding_type", None) == "absolute":
        tok_max = (read_json_file(model, "tokenizer_config.json", revision) or {}).get("model_max_length")
        if isinstance(tok_max, (int, float)) and 0 < tok_max < 10**7:
            values.append(int(tok_max))
    return min(values) if values else None


#: Model types whose position ids start after the padding index (RoBERTa's ``padding_idx + 1`` offset).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "data2vec-text", "xmod")


def usable_positions(model: str, revision: str | None = None) -> int | None:
    """How many tokens the checkpoint's position table covers, from config.json alone: ``max_position_embeddings``,
    less RoBERTa's offset (514 rows hold 512 positions); None for rotary positions (no table), ALiBi and
    unreadable configs. The reference cannot read past it either (it fails), so no engine is started with a longer context."""
    config = config_json(model, revision) or {}
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    positions = text.get("max_position_embeddings")
    if not isinstance(positions, int) or positions <= 0:
        return None
    if any(key in text for key in ("rope_theta", "rope_scaling", "rope_parameters", "rotary_emb_base")) or \
            text.get("position_embedding_type") in ("rotary", "rope"):
        return None  # rotary positions have no table: the reference runs longer inputs, vLLM decides the limit
    if text.get("model_type") in _OFFSET_POSITIONS or config.get("model_type") in _OFFSET_POSITIONS:
        pad = text.get("pad_token_id")
        positions -= (pad if isinstance(pad, int) else 1) + 1
    return positions


def context_length(model: str, revision: str | None = None, *, trust_remote_code: bool = False,
                   requested: int | None = None, reference: Any = None, template: Any = None) -> int | None:
    """The context an engine runs ``model`` with: decided here for the wrappers, the in-process engine, a fleet and
    the engine defaults alike, so truncation before the engine starts (the wrappers, the cache, a lazy start) and
    the engine agree.

    - ``requested``: the caller's ``max_model_len`` (the local engine checks it against the model);
    - else, for a model whose reference is sentence-transformers (``reference``: the ``SentenceTransformer`` or
      ``CrossEncoder`` mteb's loader built): the longest input the reference gives the transformer (its
      ``max_seq_length``, or a longer per-task or per-call length the model saved), capped at the positions the
      checkpoint has (:func:`usable_positions`), so the engine is never asked for a context its weights do not
      cover;
    - else what vLLM reads from the checkpoint's files (:func:`model_context_length`), capped at a score
      ``template``'s ``max_length``: the reference never reads past it, and a shorter context also keeps vLLM's KV
      cache (sized for one max-length sequence) small.

    None when nothing says (the engine then decides when it starts).
    """
    if requested:
        return int(requested)
    if reference is not None:
        return _reference_length(reference, model, revision)
    length = model_context_length(model, trust_remote_code=trust_remote_code, revision=revision)
    if template is not None and template.max_length and length:
        length = min(length, template.max_length)
    return length


def _reference_length(st: Any, model: str, revision: str | None) -> int:
    """The longest input a sentence-transformers reference gives its transformer, capped at the checkpoint's
    positions (see :func:`context_length`)."""
    transformer = st.transformer
    lengths = [int(st.max_seq_length or 0)]
    for extra in (transformer.query_length, transformer.document_length,
                  (transformer.processing_kwargs.get("text") or {}).get("max_length")):
        if isinstance(extra, int) and extra > 0:
            lengths.append(extra)
    length = max(lengths)
    cap = usable_positions(model, revision)
    return min(length, cap) if cap else length


def load_tokenizer(model: str, revision: str | None = None, *, trust_remote_code: bool = False) -> Any:
    """The Hugging Face tokenizer of ``model`` at ``revision``: what sentence-transformers and mteb's reference
    loaders tokenize with. Every backend hands it to the wrappers, which send token ids, so the engine's own
    tokenizer never decides what a model sees."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(os.path.expanduser(model), revision=revision,
                                             trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelNotFoundError(f"could not load the tokenizer of {model!r}: {type(exc).__name__}: {exc}") from exc


# --- shape ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TransformerShape:
    """The numbers that decide a transformer encoder/decoder's forward FLOPs and KV cache size."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    gated_mlp: bool = False

    @classmethod
    def from_config(cls, config: Any) -> TransformerShape:
        cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = int(cfg.num_attention_heads)
        hidden = int(cfg.hidden_size)
        model_type = getattr(cfg, "model_type", "")
        return cls(
            layers=int(cfg.num_hidden_layers),
            hidden=hidden,
            intermediate=int(getattr(cfg, "intermediate_size", 4 * hidden)),
            heads=heads,
            kv_heads=int(getattr(cfg, "num_key_value_heads", None) or heads),
            head_dim=int(getattr(cfg, "head_dim", None) or hidden // heads),
            # LLaMA-style blocks (Qwen, Mistral, Gemma) have gate, up and down projections
            gated_mlp=model_type not in ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra"),
        )

    @property
    def params_per_token(self) -> int:
        """Weights every token multiplies through (embeddings excluded: they are a lookup)."""
        attn = self.hidden * self.heads * self.head_dim * 2 + self.hidden * self.kv_heads * self.head_dim * 2
        mlp = self.hidden * self.intermediate * (3 if self.gated_mlp else 2)
        return self.layers * (attn + mlp)

    def forward_flops(self, seq_len: int) -> int:
        """FLOPs of one sequence: 2 per weight per token, plus QK^T and AV (2 * 2 * s^2 * d per layer)."""
        dense = 2 * self.params_per_token * seq_len
        attention = 4 * self.layers * self.heads * self.head_dim * seq_len * seq_len
        return dense + attention


def model_shape(model: str, trust_remote_code: bool = False, revision: str | None = None) -> TransformerShape | None:
    config = hf_text_config(model, trust_remote_code, revision)
    try:
        return TransformerShape.from_config(config) if config is not None else None
    except (AttributeError, TypeError, ValueError):  # not a transformer shape this module knows
        return None
