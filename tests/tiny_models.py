"""Tiny random-weight checkpoints written to disk, for architectures the packaged MiniLM does not cover.

Every builder reuses MiniLM's tokenizer files (no hub access) and picks sizes vLLM's CPU kernels accept
(attention head_dim 32). Weights are random but fixed by the seed; what the tests compare is vLLM
against a plain transformers / sentence-transformers run of the *same* files, so random is enough.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
VOCAB_SIZE = 30522  # MiniLM's BERT WordPiece vocabulary


def _copy_tokenizer(src: str | Path, dst: Path, *, eos_token: str | None = None) -> None:
    for name in TOKENIZER_FILES:
        if (Path(src) / name).exists():
            shutil.copy(Path(src) / name, dst / name)
    if eos_token is not None:
        # Decoder rerankers pad with EOS (mteb's Qwen3 wrapper does); BERT's tokenizer has none.
        cfg_path = dst / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["eos_token"] = eos_token
        cfg_path.write_text(json.dumps(cfg, indent=2))


def _qwen3_config(**overrides):
    from transformers import Qwen3Config

    base = dict(vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=1024,
                pad_token_id=0, bos_token_id=101, eos_token_id=102, torch_dtype="float32")
    base.update(overrides)
    return Qwen3Config(**base)


def qwen3_embedding_model(dst: Path, tokenizer_src: str | Path, seed: int = 0) -> Path:
    """A Qwen3-style decoder used as an embedding model (vLLM pools its last token)."""
    import torch
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    dst.mkdir(parents=True, exist_ok=True)
    Qwen3ForCausalLM(_qwen3_config(tie_word_embeddings=True)).eval().save_pretrained(dst)
    _copy_tokenizer(tokenizer_src, dst)
    return dst


def qwen3_reranker_model(dst: Path, tokenizer_src: str | Path, seed: int = 1) -> Path:
    """A Qwen3 causal LM scored from its "yes"/"no" logits, like Qwen3-Reranker."""
    import torch
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    dst.mkdir(parents=True, exist_ok=True)
    model = Qwen3ForCausalLM(_qwen3_config(tie_word_embeddings=False)).eval()
    with torch.no_grad():  # a wider spread of yes/no logits makes ranking differences visible
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(dst)
    _copy_tokenizer(tokenizer_src, dst, eos_token="[SEP]")
    return dst


def bert_cross_encoder(dst: Path, tokenizer_src: str | Path, seed: int = 2, num_labels: int = 1) -> Path:
    """A BERT sequence classifier with one label (the shape of ms-marco-MiniLM cross-encoders), or two
    (not relevant / relevant, as NLI-style rerankers have)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    dst.mkdir(parents=True, exist_ok=True)
    config = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=512, num_labels=num_labels,
                        initializer_range=0.2)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # spread the scores so that "same ranking" is a real check
        model.classifier.weight.mul_(0.2)
    model.save_pretrained(dst)
    _copy_tokenizer(tokenizer_src, dst)
    return dst


def classifier_config_only(minilm_path: str | Path, dst: Path) -> str:
    """MiniLM's config and tokenizer declared a sequence classifier, without weights: enough for the wrappers'
    checks and for servers that only need the name and tokenizer (nothing can start an engine on it). One label,
    as most rerankers have: its score is the logit, which a plain server's /score answers too."""
    shutil.copytree(minilm_path, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.md"))
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, "architectures": ["BertForSequenceClassification"],
                                                       "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}))
    return str(dst)
