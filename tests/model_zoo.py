"""The model zoo of the parity suite: one tiny random-weight checkpoint per setup users bring (issue 16).

Each setup is a folder saved the way users' checkpoints are saved: by sentence-transformers 6.3's own ``save``
(the installed version), in the layout sentence-transformers <= 5.3 wrote (rewritten from a 6.3 save into exactly
the files and keys 5.3 writes, see :func:`as_st53_layout`), or as a plain Hugging Face folder. Sizes are tiny
(hidden 64-128, 2 layers, attention head_dim 32, which vLLM's CPU attention takes) and every weight comes from a
seeded generator, so a build is the same on every run. What the suite compares is vLLM (through our wrappers)
against sentence-transformers on the *same* folder, so random weights are enough.

Tokenizers: BERT-family setups reuse the packaged all-MiniLM-L6-v2 WordPiece files; RoBERTa, XLM-R, Qwen,
Llama and Gemma get small tokenizers trained here with ``tokenizers`` on the demo sentences (byte-level BPE,
Unigram with Metaspace, SentencePiece-style BPE), with the special tokens and post-processors of the real
families; Mistral uses the real Mistral-7B SentencePiece model shipped inside ``mistral_common``.

``SETUPS`` drives the tests (tests/test_model_zoo.py) and the README's model-support table
(scripts/model_support.py). :func:`build` builds a setup once per fingerprint (this file's source and the
library versions) into a cache folder, so reruns reuse the folders.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

HERE = Path(__file__).resolve().parent

# --- texts ---------------------------------------------------------------------------------------------------
MULTILINGUAL = (
    "Die Katze schläft auf der warmen Fensterbank.",
    "Le chat dort sur le rebord de la fenêtre.",
    "El perro persigue una pelota en el parque.",
    "Кошка спит на тёплом подоконнике.",
    "猫在温暖的窗台上睡觉。",
    "Ünïcödé façade, naïve café, Ångström.",
)


def _demo_rows(name: str) -> list[dict[str, Any]]:
    from mteb_vllm.demo import _read_jsonl

    return _read_jsonl(name)


@functools.lru_cache(maxsize=1)
def sentences() -> tuple[str, ...]:
    """Every real sentence of the demo data (STS pairs, queries, passages) plus a few other languages."""
    out: list[str] = []
    for row in _demo_rows("sts.jsonl"):
        out += [row["sentence1"], row["sentence2"]]
    out += [q["text"] for q in _demo_rows("queries.jsonl")]
    out += [d["text"] for d in _demo_rows("corpus.jsonl")]
    return tuple(dict.fromkeys(out + list(MULTILINGUAL)))


@functools.lru_cache(maxsize=1)
def zoo_texts() -> tuple[str, ...]:
    """What the per-row parity check embeds: real sentences, texts that tokenizers treat specially (spaces at
    the ends, capitals, accents, CJK, emoji), and a real-length text longer than every context in the zoo (the
    demo passages joined three times: 1,550 WordPiece tokens, 1,380-3,040 with the zoo's small vocabularies)."""
    edge = ("  spaces at both ends  ", "MixedCase WORDS In A Sentence", "emoji 🙂 and symbols #42 €5", "a",
            "Tabs\tand\nnew lines")
    return tuple(dict.fromkeys(sentences() + edge + (long_text(),)))


def medium_text() -> str:
    """The demo passages joined once: 517 WordPiece tokens, just over 512."""
    return " ".join(d["text"] for d in _demo_rows("corpus.jsonl"))


def long_text() -> str:
    return " ".join([d["text"] for d in _demo_rows("corpus.jsonl")] * 3)


# --- the packaged MiniLM's WordPiece files -------------------------------------------------------------------
WORDPIECE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
WORDPIECE_VOCAB = 30522
CLS_ID, SEP_ID, PAD_ID = 101, 102, 0


def minilm_path() -> Path:
    from mteb_vllm import default_model_path

    return Path(default_model_path())


def _edit_json(path: Path, **updates: Any) -> dict[str, Any]:
    data = json.loads(path.read_text())
    for key, value in updates.items():
        if value is _DROP:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data, indent=2))
    return data


_DROP = object()


def wordpiece(dst: Path, *, cased: bool = False, model_max_length: int | None = None) -> None:
    """MiniLM's uncased WordPiece tokenizer files; ``cased`` turns the lower-casing off (the vocabulary stays the
    uncased one, so capitals become other pieces or [UNK], which makes lower-casing visible in the ids)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in WORDPIECE_FILES:
        shutil.copy(minilm_path() / name, dst / name)
    if cased:
        tok = json.loads((dst / "tokenizer.json").read_text())
        tok["normalizer"]["lowercase"] = False
        (dst / "tokenizer.json").write_text(json.dumps(tok))
        _edit_json(dst / "tokenizer_config.json", do_lower_case=False)
    if model_max_length is not None:
        _edit_json(dst / "tokenizer_config.json", model_max_length=model_max_length)


# --- trained tokenizers --------------------------------------------------------------------------------------
def _training_corpus() -> list[str]:
    return list(sentences()) * 4


def _save_fast(tok: Any, dst: Path, *, tokenizer_class: str, model_max_length: int, **specials: Any) -> None:
    """Save a ``tokenizers.Tokenizer`` as a transformers tokenizer folder (tokenizer.json + tokenizer_config.json)
    declared as ``tokenizer_class``, and check that loading the folder gives the ids of the raw tokenizer."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **specials)
    fast.save_pretrained(dst)
    _edit_json(dst / "tokenizer_config.json", tokenizer_class=tokenizer_class)
    loaded = AutoTokenizer.from_pretrained(dst)
    probe = "Hello world, the cat sleeps."
    if loaded(probe)["input_ids"] != tok.encode(probe).ids:
        raise AssertionError(f"{tokenizer_class} rebuilt from {dst} tokenizes differently from tokenizer.json")


def roberta_bpe(dst: Path, *, model_max_length: int = 512) -> int:
    """Byte-level BPE with <s> $A </s> (RobertaProcessing), ids 0-3 = <s> <pad> </s> <unk>; returns the vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_training_corpus(), trainers.BpeTrainer(
        vocab_size=2000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    _save_fast(tok, dst, tokenizer_class="RobertaTokenizer", model_max_length=model_max_length, bos_token="<s>",
               eos_token="</s>", sep_token="</s>", cls_token="<s>", pad_token="<pad>", unk_token="<unk>",
               mask_token="<mask>")
    return tok.get_vocab_size()


def xlmr_unigram(dst: Path, *, model_max_length: int = 512) -> int:
    """SentencePiece-style Unigram with Metaspace and XLM-R's specials and pair template; returns the vocab size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(_training_corpus(), trainers.UnigramTrainer(
        vocab_size=1500, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk_token="<unk>",
        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    _save_fast(tok, dst, tokenizer_class="XLMRobertaTokenizer", model_max_length=model_max_length,
               bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", pad_token="<pad>",
               unk_token="<unk>", mask_token="<mask>")
    return tok.get_vocab_size()


def decoder_bpe(dst: Path, *, family: Literal["qwen", "llama", "gemma"], model_max_length: int,
                padding_side: str = "right") -> dict[str, int]:
    """A decoder tokenizer whose post-processor appends EOS (as Qwen3-Embedding's and embeddinggemma's do):
    qwen: byte-level BPE, ``$A <|endoftext|>``, pad = EOS; llama: byte-level BPE, ``<|begin_of_text|> $A
    <|end_of_text|>``; gemma: SentencePiece-style BPE (Metaspace), ``<bos> $A <eos>``, pad <pad>.
    Returns the special-token ids and the vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if family == "gemma":
        specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
        alphabet: list[str] = []
    else:
        specials = (["<|endoftext|>", "<|im_start|>", "<|im_end|>"] if family == "qwen"
                    else ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"])
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(_training_corpus(), trainers.BpeTrainer(
        vocab_size=2000, special_tokens=specials, initial_alphabet=alphabet, show_progress=False))
    ids = {s: tok.token_to_id(s) for s in specials}
    if family == "qwen":
        eos, bos, pad = "<|endoftext|>", None, "<|endoftext|>"
        template = "$A <|endoftext|>"
    elif family == "llama":
        eos, bos, pad = "<|end_of_text|>", "<|begin_of_text|>", "<|finetune_right_pad_id|>"
        template = "<|begin_of_text|> $A <|end_of_text|>"
    else:
        eos, bos, pad = "<eos>", "<bos>", "<pad>"
        template = "<bos> $A <eos>"
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, ids[s]) for s in (bos, eos) if s is not None])
    classes = {"qwen": "Qwen2Tokenizer", "llama": "PreTrainedTokenizerFast", "gemma": "GemmaTokenizer"}
    _save_fast(tok, dst, tokenizer_class=classes[family], model_max_length=model_max_length, eos_token=eos,
               pad_token=pad, **({"bos_token": bos} if bos else {}), padding_side=padding_side,
               **({"unk_token": "<unk>"} if family == "gemma" else {}))
    return {"vocab_size": tok.get_vocab_size(), "eos": ids[eos], "pad": ids[pad],
            "bos": ids[bos] if bos else ids[eos]}


def mistral_sentencepiece_file() -> Path:
    """The Mistral-7B v0.1 SentencePiece model (32,000 pieces) that ships inside ``mistral_common``."""
    import mistral_common

    path = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: mistral_common changed its data files")
    return path


def mistral_sentencepiece(dst: Path, *, add_eos: bool, model_max_length: int,
                          tokenizer_config: dict[str, Any] | None = None) -> dict[str, int]:
    """Mistral's real tokenizer, converted by transformers 5 into tokenizer.json (its post-processor then adds
    ``<s>`` only). ``add_eos`` rebuilds the post-processor as ``<s> $A </s>`` (what a last-token embedder needs)
    before saving. ``tokenizer_config`` keys are written into tokenizer_config.json after saving, as a repo's own
    file would have them (transformers 5 keeps tokenizer.json's post-processor whatever they say)."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(mistral_sentencepiece_file(), Path(tmp) / "tokenizer.model")
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
        tok = AutoTokenizer.from_pretrained(tmp)
    if add_eos:
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> <s> $B </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    else:  # what transformers 5 converts Mistral's tokenizer.model to, with add_bos_token on
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tok.pad_token = "</s>"
    tok.model_max_length = model_max_length
    tok.save_pretrained(dst)
    if tokenizer_config:
        _edit_json(dst / "tokenizer_config.json", **tokenizer_config)
    return {"vocab_size": len(tok), "bos": 1, "eos": 2, "pad": 2}


# --- sentence-transformers saves -----------------------------------------------------------------------------
def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _randomize_norms(model: Any) -> None:
    """Give every normalisation layer a random scale and shift, as trained checkpoints have. Freshly initialised
    ones (scale 1, shift 0) make a BERT's outputs zero-mean per row, which hides any step that centres vectors
    (a LayerNorm after pooling, nomic's loader's layer_norm): cosine cannot tell such a step from none."""
    import torch

    with torch.no_grad():
        for name, module in model.named_modules():
            if "norm" not in type(module).__name__.lower() and not name.split(".")[-1].lower().endswith("norm"):
                continue
            weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
            if isinstance(weight, torch.nn.Parameter):
                weight.uniform_(0.6, 1.4)
            if isinstance(bias, torch.nn.Parameter):
                bias.uniform_(-0.3, 0.3)


def _save_hf(model: Any, dst: Path, *, randomize: bool = True) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    if randomize:
        _randomize_norms(model)
    model.eval().save_pretrained(dst)
    return dst


def st_save(dst: Path, hf_dir: Path, modules_after: Callable[[int], list[Any]], *, seed: int,
            transformer_kwargs: dict[str, Any] | None = None, **st_kwargs: Any) -> None:
    """``SentenceTransformer(modules=[Transformer(hf_dir, ...), *modules_after(dim)]).save(dst)`` with the installed
    sentence-transformers (6.3): the layout every checkpoint fine-tuned or saved with sentence-transformers >= 5.4
    has. The post-Transformer modules are initialised from ``seed``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Transformer

    transformer = Transformer(str(hf_dir), **(transformer_kwargs or {}))
    _seed(seed)
    dim = transformer.get_embedding_dimension()
    model = SentenceTransformer(modules=[transformer, *modules_after(dim)], device="cpu", **st_kwargs)
    model.save(str(dst), create_model_card=False)


def pool(mode: str | tuple[str, ...] = "mean", *, normalize: bool = True, include_prompt: bool = True,
         dense: tuple[tuple[int, Any, bool], ...] = (), layer_norm: bool = False) -> Callable[[int], list[Any]]:
    """The modules after the Transformer: Pooling(mode), then each Dense (out_features, activation, bias), an
    optional LayerNorm, an optional Normalize."""

    def modules(dim: int) -> list[Any]:
        from sentence_transformers.sentence_transformer.modules import Dense, LayerNorm, Normalize, Pooling

        out: list[Any] = [Pooling(dim, mode, include_prompt=include_prompt)]
        width = out[0].get_sentence_embedding_dimension()
        for features, activation, bias in dense:
            out.append(Dense(width, features, bias=bias, activation_function=activation))
            width = features
        if layer_norm:
            layer = LayerNorm(width)
            import torch

            with torch.no_grad():  # the default (ones, zeros) would hide a missing LayerNorm's shift and scale
                layer.norm.weight.uniform_(0.5, 1.5)
                layer.norm.bias.uniform_(-0.5, 0.5)
            out.append(layer)
        if normalize:
            out.append(Normalize())
        return out

    return modules


_ST53_TYPES = {
    "sentence_transformers.base.modules.transformer.Transformer": "sentence_transformers.models.Transformer",
    "sentence_transformers.sentence_transformer.modules.pooling.Pooling": "sentence_transformers.models.Pooling",
    "sentence_transformers.base.modules.dense.Dense": "sentence_transformers.models.Dense",
    "sentence_transformers.base.modules.normalize.Normalize": "sentence_transformers.models.Normalize",
    "sentence_transformers.sentence_transformer.modules.layer_norm.LayerNorm": "sentence_transformers.models.LayerNorm",
}
_POOLING_FLAGS = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")
_MODE_FLAG = {"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens",
              "mean_sqrt_len_tokens": "mean_sqrt_len_tokens", "weightedmean": "weightedmean_tokens",
              "lasttoken": "lasttoken"}


def as_st53_layout(folder: Path, *, max_seq_length: int, do_lower_case: bool, version: str = "5.3.0",
                   tokenizer_max_length: Any = "same") -> None:
    """Rewrite a sentence-transformers 6.3 save into the files 5.3 writes for the same modules (measured with the
    5.3.0 wheel, /work/survey/st_vllm.md §A1): module types under ``sentence_transformers.models``,
    ``sentence_bert_config.json`` = {max_seq_length, do_lower_case}, legacy ``pooling_mode_*`` booleans, Dense
    configs without module names, an empty Normalize folder, ``model_max_length`` = max_seq_length in
    tokenizer_config.json (5.3 hands max_seq_length to the tokenizer), and the 5.3 version stamp. 5.3 lower-cases
    in ``Transformer.tokenize`` (``str.lower``), so ``do_lower_case`` lives only in sentence_bert_config.json and
    tokenizer.json keeps its own normalizer.

    Older releases (2.x-5.2, which wrote most checkpoints on the hub) wrote the same files; ``version`` stamps
    theirs, and ``tokenizer_max_length`` keeps the tokenizer's own limit (an int to write, None to leave it) where
    a repo's tokenizer_config.json says something else than max_seq_length (all-MiniLM-L6-v2: 512 vs 256)."""
    modules = json.loads((folder / "modules.json").read_text())
    for entry in modules:
        entry["type"] = _ST53_TYPES[entry["type"]]
        sub = folder / entry["path"]
        if entry["type"].endswith("Pooling"):
            cfg = json.loads((sub / "config.json").read_text())
            modes = cfg["pooling_mode"] if isinstance(cfg["pooling_mode"], list) else [cfg["pooling_mode"]]
            legacy: dict[str, Any] = {"word_embedding_dimension": cfg["embedding_dimension"]}
            legacy.update({f"pooling_mode_{flag}": any(_MODE_FLAG[m] == flag for m in modes)
                           for flag in _POOLING_FLAGS})
            legacy["include_prompt"] = cfg["include_prompt"]
            (sub / "config.json").write_text(json.dumps(legacy, indent=4))
        elif entry["type"].endswith("Dense"):
            cfg = json.loads((sub / "config.json").read_text())
            for key in ("module_input_name", "module_output_name"):
                cfg.pop(key, None)
            (sub / "config.json").write_text(json.dumps(cfg, indent=4))
        elif entry["type"].endswith("Normalize") and (sub / "config.json").exists():
            (sub / "config.json").unlink()
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": do_lower_case}, indent=4))
    if tokenizer_max_length is not None:
        _edit_json(folder / "tokenizer_config.json",
                   model_max_length=max_seq_length if tokenizer_max_length == "same" else tokenizer_max_length)
    _edit_json(folder / "config_sentence_transformers.json",
               __version__={"sentence_transformers": version, "transformers": _version("transformers"),
                            "pytorch": _version("torch")})


def _version(dist: str) -> str:
    import importlib.metadata as md

    return md.version(dist)


# --- base models ---------------------------------------------------------------------------------------------
def bert_hf(dst: Path, *, seed: int, cased: bool = False, model_max_length: int | None = None,
            max_position_embeddings: int = 512, head: str | None = None, num_labels: int = 1,
            output_shift: float = 0.0) -> Path:
    """A tiny BERT (hidden 64, 2 layers, 2 heads of 32) with MiniLM's WordPiece files; ``head="classifier"``
    gives a BertForSequenceClassification with ``num_labels``. ``output_shift`` is added to the last layer's
    LayerNorm shift, so every token vector gets a large common offset (rows far from zero-mean)."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    config = BertConfig(vocab_size=WORDPIECE_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=max_position_embeddings,
                        initializer_range=0.1, num_labels=num_labels)
    _seed(seed)
    model = BertForSequenceClassification(config) if head == "classifier" else BertModel(config)
    _randomize_norms(model)
    if output_shift:
        import torch

        with torch.no_grad():
            model.encoder.layer[-1].output.LayerNorm.bias.add_(output_shift)
    _save_hf(model, dst, randomize=False)
    wordpiece(dst, cased=cased, model_max_length=model_max_length)
    return dst


def roberta_hf(dst: Path, *, seed: int, xlmr: bool = False, position_embedding_type: bool = False,
               head: str | None = None, model_max_length: int = 512, max_position_embeddings: int = 514) -> Path:
    """A tiny RoBERTa (byte-level BPE) or XLM-R (Unigram): hidden 64, 2 layers, positions offset by the pad id
    (1), so ``max_position_embeddings`` 514 holds 512 tokens. A transformers-5 config has no
    ``position_embedding_type``; ``position_embedding_type=True`` writes the "absolute" that transformers 4 saved."""
    from transformers import (
        RobertaConfig,
        RobertaModel,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
        XLMRobertaModel,
    )

    dst.mkdir(parents=True, exist_ok=True)
    vocab = (xlmr_unigram if xlmr else roberta_bpe)(dst, model_max_length=model_max_length)
    config_cls = XLMRobertaConfig if xlmr else RobertaConfig
    config = config_cls(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=max_position_embeddings, pad_token_id=1,
                        bos_token_id=0, eos_token_id=2, initializer_range=0.1, num_labels=1)
    _seed(seed)
    if head == "classifier":
        model = XLMRobertaForSequenceClassification(config)
    else:
        model = (XLMRobertaModel if xlmr else RobertaModel)(config, add_pooling_layer=False)
    _save_hf(model, dst)
    if position_embedding_type:
        _edit_json(dst / "config.json", position_embedding_type="absolute")
    return dst


def modernbert_hf(dst: Path, *, seed: int, head: str | None = None, model_max_length: int = 512) -> Path:
    """A tiny ModernBERT (hidden 64, 2 heads of 32, local attention 64 so long inputs cross windows) with
    MiniLM's WordPiece ids for [CLS]/[SEP]/[PAD]."""
    from transformers import ModernBertConfig, ModernBertForSequenceClassification, ModernBertModel

    config = ModernBertConfig(vocab_size=WORDPIECE_VOCAB, hidden_size=64, intermediate_size=128,
                              num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=1024,
                              local_attention=64, global_attn_every_n_layers=2, pad_token_id=PAD_ID,
                              cls_token_id=CLS_ID, sep_token_id=SEP_ID, bos_token_id=CLS_ID, eos_token_id=SEP_ID,
                              initializer_range=0.1, num_labels=1)
    _seed(seed)
    model = ModernBertForSequenceClassification(config) if head == "classifier" else ModernBertModel(config)
    _save_hf(model, dst)
    wordpiece(dst, model_max_length=model_max_length)
    return dst


def mpnet_hf(dst: Path, *, seed: int) -> Path:
    """A tiny MPNet (all-mpnet-base-v2's architecture) with MiniLM's WordPiece files."""
    from transformers import MPNetConfig, MPNetModel

    config = MPNetConfig(vocab_size=WORDPIECE_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=514, pad_token_id=PAD_ID,
                         initializer_range=0.1)
    _seed(seed)
    _save_hf(MPNetModel(config), dst)
    wordpiece(dst, model_max_length=512)
    return dst


def distilbert_hf(dst: Path, *, seed: int) -> Path:
    """A tiny DistilBERT (distiluse / msmarco-distilbert's architecture) with MiniLM's WordPiece files."""
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig(vocab_size=WORDPIECE_VOCAB, dim=64, hidden_dim=128, n_layers=2, n_heads=2,
                              max_position_embeddings=512, initializer_range=0.1, pad_token_id=PAD_ID)
    _seed(seed)
    _save_hf(DistilBertModel(config), dst)
    wordpiece(dst, model_max_length=512)
    return dst


def t5_encoder_hf(dst: Path, *, seed: int) -> Path:
    """A tiny T5 encoder (sentence-t5 / gtr-t5's architecture: relative position buckets, RMS norms) with
    MiniLM's WordPiece files (the ids matter, not T5's own vocabulary)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=WORDPIECE_VOCAB, d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2,
                      relative_attention_num_buckets=32, relative_attention_max_distance=128, pad_token_id=PAD_ID,
                      eos_token_id=SEP_ID, initializer_factor=1.0)
    _seed(seed)
    _save_hf(T5EncoderModel(config), dst)
    wordpiece(dst, model_max_length=512)
    return dst


def camembert_hf(dst: Path, *, seed: int) -> Path:
    """A tiny CamemBERT: RoBERTa's architecture under another model_type (positions offset by the pad id), with
    the zoo's SentencePiece-style Unigram tokenizer (XLM-R's specials; CamemBERT's own ids do not matter here)."""
    from transformers import CamembertConfig, CamembertModel

    dst.mkdir(parents=True, exist_ok=True)
    vocab = xlmr_unigram(dst, model_max_length=512)
    config = CamembertConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=2, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                             eos_token_id=2, initializer_range=0.1)
    _seed(seed)
    _save_hf(CamembertModel(config, add_pooling_layer=False), dst)
    return dst


def debertav2_classifier_hf(dst: Path, *, seed: int) -> Path:
    """A tiny DeBERTa-v2 sequence classifier (mxbai-rerank-*-v1's architecture) with MiniLM's WordPiece files."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    config = DebertaV2Config(vocab_size=WORDPIECE_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=2, max_position_embeddings=512, num_labels=1, pad_token_id=PAD_ID,
                             initializer_range=0.1)
    _seed(seed)
    _save_hf(DebertaV2ForSequenceClassification(config), dst)
    wordpiece(dst, model_max_length=512)
    return dst


DecoderFamily = Literal["qwen2", "qwen3", "mistral", "llama"]


def decoder_hf(dst: Path, *, family: DecoderFamily, seed: int, model_max_length: int = 512,
               max_position_embeddings: int = 1024, padding_side: str = "right", causal_lm: bool = False,
               extra_config: dict[str, Any] | None = None) -> Path:
    """A tiny decoder (hidden 128, 4 query heads / 2 KV heads of 32, 2 layers) whose tokenizer appends EOS; the
    tokenizer's limit (512) is below the positions (1024), as in real checkpoints whose tokenizer says less than
    the model could take. ``causal_lm`` saves the *ForCausalLM class (weights under ``model.``)."""
    import transformers as tf

    dst.mkdir(parents=True, exist_ok=True)
    if family == "mistral":
        ids = mistral_sentencepiece(dst, add_eos=True, model_max_length=model_max_length)
        _edit_json(dst / "tokenizer_config.json", padding_side=padding_side)
    else:
        ids = decoder_bpe(dst, family="qwen" if family.startswith("qwen") else "llama",
                          model_max_length=model_max_length, padding_side=padding_side)
    names = {"qwen2": "Qwen2", "qwen3": "Qwen3", "mistral": "Mistral", "llama": "Llama"}[family]
    kwargs: dict[str, Any] = dict(vocab_size=ids["vocab_size"], hidden_size=128, intermediate_size=256,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  max_position_embeddings=max_position_embeddings, bos_token_id=ids["bos"],
                                  eos_token_id=ids["eos"], pad_token_id=ids["pad"], initializer_range=0.1,
                                  tie_word_embeddings=True)
    if family != "qwen2":
        kwargs["head_dim"] = 32
    kwargs.update(extra_config or {})
    config = getattr(tf, f"{names}Config")(**kwargs)
    _seed(seed)
    model = getattr(tf, f"{names}ForCausalLM" if causal_lm else f"{names}Model")(config)
    _save_hf(model, dst)
    return dst


def gemma3_hf(dst: Path, *, seed: int, model_max_length: int = 1024) -> Path:
    """A tiny bidirectional Gemma3 text encoder (embeddinggemma's architecture: ``use_bidirectional_attention``,
    sliding and full attention layers) whose tokenizer adds <bos> and <eos>. Positions 2048, tokenizer 1024,
    sliding window 128, so long inputs cross the window."""
    from transformers import Gemma3TextConfig, Gemma3TextModel

    dst.mkdir(parents=True, exist_ok=True)
    ids = decoder_bpe(dst, family="gemma", model_max_length=model_max_length)
    config = Gemma3TextConfig(vocab_size=ids["vocab_size"], hidden_size=128, intermediate_size=256,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                              max_position_embeddings=2048, sliding_window=128,
                              layer_types=["sliding_attention", "full_attention"], use_bidirectional_attention=True,
                              bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
                              query_pre_attn_scalar=32, initializer_range=0.1)
    _seed(seed)
    _save_hf(Gemma3TextModel(config), dst)
    return dst


# --- setups --------------------------------------------------------------------------------------------------
Kind = Literal["encoder", "cross-encoder"]
Expected = Literal["exact", "refused"]


@dataclass(frozen=True)
class Setup:
    """One way a checkpoint can be set up, and what the suite expects of our wrappers on it.

    ``expected``: "exact" (same vectors / scores as the reference in float32, within the suite's bounds) or
    "refused" (``UnsupportedModelError`` before any engine starts). ``reference``: what gives the reference
    numbers: "sentence-transformers" (``SentenceTransformer`` / ``CrossEncoder`` on the folder) or
    "mteb-qwen3-reranker" (mteb's Qwen3RerankerWrapper). ``prompted``: the folder saves prompts, so the
    query side of a retrieval task is compared too.
    """

    id: str
    covers: str
    examples: tuple[str, ...]
    builder: Callable[[Path], None]
    kind: Kind = "encoder"
    expected: Expected = "exact"
    reason: str = ""
    reference: str = "sentence-transformers"
    prompted: bool = False


def _hf_then_st(hf: Callable[[Path], Path], modules: Callable[[int], list[Any]], *, seed: int = 100,
                transformer_kwargs: dict[str, Any] | None = None, then: Callable[[Path], None] | None = None,
                **st_kwargs: Any) -> Callable[[Path], None]:
    """A builder: the base model into a scratch folder, then a sentence-transformers 6.3 save into the setup's."""

    def builder(dst: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            hf_dir = hf(Path(tmp) / "hf")
            st_save(dst, hf_dir, modules, seed=seed, transformer_kwargs=transformer_kwargs, **st_kwargs)
        if then is not None:
            then(dst)

    return builder


def _copy_hf(hf: Callable[[Path], Path]) -> Callable[[Path], None]:
    def builder(dst: Path) -> None:
        hf(dst)

    return builder


def _drop_dense_activation(folder: Path) -> None:
    """A Dense config without ``activation_function`` (written by old releases and by hand): ST reads Tanh."""
    for sub in sorted(folder.glob("*_Dense")):
        _edit_json(sub / "config.json", activation_function=_DROP)


def _set_problem_type_regression(folder: Path) -> None:
    _edit_json(folder / "config.json", problem_type="regression")


def _static_embedding(dst: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from transformers import AutoTokenizer

    _seed(300)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    static = StaticEmbedding(tokenizer, embedding_dim=32)
    SentenceTransformer(modules=[static], device="cpu").save(str(dst), create_model_card=False)


def _cross_encoder(hf: Callable[[Path], Path], *, max_length: int | None = None, activation: Any = "default",
                   then: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """A sequence classifier saved by ``CrossEncoder.save`` (6.3: activation in config_sentence_transformers.json)."""

    def builder(dst: Path) -> None:
        from sentence_transformers import CrossEncoder

        with tempfile.TemporaryDirectory() as tmp:
            hf_dir = hf(Path(tmp) / "hf")
            if isinstance(activation, _Lazy):
                kwargs: dict[str, Any] = {"activation_fn": activation.make()}
            else:
                kwargs = {}
            if max_length is not None:
                kwargs["max_length"] = max_length
            CrossEncoder(str(hf_dir), device="cpu", **kwargs).save(str(dst), create_model_card=False)
        if then is not None:
            then(dst)

    return builder


def _cross_encoder_st53(hf: Callable[[Path], Path], activation: str) -> Callable[[Path], None]:
    """What ``CrossEncoder.save`` wrote up to 5.3: a plain Hugging Face folder whose config.json carries
    ``"sentence_transformers": {"activation_fn": ..., "version": "5.3.0"}`` (measured with the 5.3.0 wheel)."""

    def builder(dst: Path) -> None:
        hf(dst)
        _edit_json(dst / "config.json", sentence_transformers={"activation_fn": activation, "version": "5.3.0"})

    return builder


def _qwen3_reranker(dst: Path) -> None:
    from tiny_models import qwen3_reranker_model

    qwen3_reranker_model(dst, minilm_path())


def _identity() -> Any:
    import torch

    return torch.nn.Identity()


def _act(name: str) -> Callable[[], Any]:
    def make() -> Any:
        import torch

        return getattr(torch.nn, name)()

    return make


class _Lazy:
    """An activation module made when the builder runs (torch is not imported at collection time)."""

    def __init__(self, make: Callable[[], Any]):
        self.make = make


def _resolve(spec: tuple[tuple[int, Any, bool], ...]) -> tuple[tuple[int, Any, bool], ...]:
    return tuple((n, a.make() if isinstance(a, _Lazy) else a, b) for n, a, b in spec)


def _pool(mode: str | tuple[str, ...] = "mean", *, dense: tuple[tuple[int, Any, bool], ...] = (),
          **kwargs: Any) -> Callable[[int], list[Any]]:
    def modules(dim: int) -> list[Any]:
        return pool(mode, dense=_resolve(dense), **kwargs)(dim)

    return modules


TANH, GELU, IDENTITY, SOFTPLUS = _Lazy(_act("Tanh")), _Lazy(_act("GELU")), _Lazy(_identity), _Lazy(_act("Softplus"))
PROMPTS = {"query": "query: ", "document": "passage: "}


def _bert(seed: int, **kw: Any) -> Callable[[Path], Path]:
    return lambda d: bert_hf(d, seed=seed, **kw)


def _st53(max_seq_length: int, do_lower_case: bool) -> Callable[[Path], None]:
    return lambda d: as_st53_layout(d, max_seq_length=max_seq_length, do_lower_case=do_lower_case)


def _decoder(family: DecoderFamily, seed: int, **kw: Any) -> Callable[[Path], Path]:
    return lambda d: decoder_hf(d, family=family, seed=seed, **kw)


SETUPS: tuple[Setup, ...] = (
    # --- BERT, saved by sentence-transformers 6.3 ---
    Setup("bert-mean", "BERT, mean pooling + Normalize (ST 6 save)",
          ("sentence-transformers/all-MiniLM-L6-v2", "intfloat/e5-base-v2"),
          _hf_then_st(_bert(1), _pool("mean"))),
    Setup("bert-cls", "BERT, CLS pooling + Normalize", ("BAAI/bge-base-en-v1.5", "BAAI/bge-small-en-v1.5"),
          _hf_then_st(_bert(2), _pool("cls"))),
    Setup("bert-cls-dense-tanh", "BERT, CLS + Dense(768→768, Tanh) + Normalize", ("sentence-transformers/LaBSE",),
          _hf_then_st(_bert(3), _pool("cls", dense=((64, TANH, True),)))),
    Setup("bert-mean-no-normalize", "BERT, mean pooling, no Normalize module (unnormalised vectors)",
          ("sentence-transformers/msmarco-distilbert-base-v4",), _hf_then_st(_bert(4), _pool("mean", normalize=False))),
    Setup("bert-st6-maxlen16", "ST ≥ 5.4 save with max_seq_length 16: the limit is only in tokenizer_config.json",
          ("any model fine-tuned with ST ≥ 5.4 and a max_seq_length",),
          _hf_then_st(_bert(5), _pool("mean"), transformer_kwargs={"max_seq_length": 16})),
    Setup("bert-st53-maxlen16", "ST ≤ 5.3 layout (models.* types, legacy Pooling keys, max_seq_length 16 in "
          "sentence_bert_config.json)", ("most checkpoints on the hub, saved before ST 5.4",),
          _hf_then_st(_bert(6, model_max_length=512), _pool("mean", dense=((32, GELU, True),)),
                      then=_st53(16, False))),
    Setup("bert-st53-lowercase", "ST ≤ 5.3 layout with do_lower_case: true over a cased tokenizer (ST lower-cases "
          "the text itself)", ("sentence-transformers/bert-base-nli-mean-tokens-style uncased fine-tunes",),
          _hf_then_st(_bert(7, cased=True), _pool("mean"), then=_st53(128, True))),
    Setup("bert-no-st-files", "plain Hugging Face BERT folder, no sentence-transformers files (ST: Transformer + "
          "mean pooling, no Normalize; vLLM's BERT default is CLS)", ("google-bert/bert-base-uncased",),
          _copy_hf(_bert(8))),
    Setup("bert-dense-no-activation-key", "Dense config without activation_function (ST reads Tanh)",
          ("old ST 2.x checkpoints with a Dense layer",),
          _hf_then_st(_bert(9), _pool("mean", dense=((32, TANH, True),)), then=_drop_dense_activation)),
    Setup("bert-dense-softplus", "Dense with an activation vLLM's projector does not know (Softplus)",
          ("custom fine-tunes with a Dense head",),
          _hf_then_st(_bert(10), _pool("mean", dense=((32, SOFTPLUS, True),)))),
    Setup("bert-pool-max", "max pooling", ("sentence-transformers/average_word_embeddings-style max pooling",),
          _hf_then_st(_bert(11), _pool("max"))),
    Setup("bert-pool-weightedmean", "weighted-mean pooling (position weights)",
          ("Muennighoff/SGPT-125M-weightedmean-nli",),
          _hf_then_st(_bert(12), _pool("weightedmean"))),
    Setup("bert-pool-mean-sqrt-len", "mean_sqrt_len_tokens pooling, no Normalize (vLLM reads it as MEAN)",
          ("sentence-transformers/average_word_embeddings-style sqrt pooling",),
          _hf_then_st(_bert(13), _pool("mean_sqrt_len_tokens", normalize=False))),
    Setup("bert-pool-cls-mean", "two pooling modes concatenated (cls + mean)", ("multi-mode pooling fine-tunes",),
          _hf_then_st(_bert(14), _pool(("cls", "mean")))),
    Setup("bert-include-prompt-false", "include_prompt: false with saved prompts (prompt tokens excluded from "
          "mean pooling)", ("hkunlp/instructor-base-style", "GritLM/GritLM-7B (set by mteb's loader)"),
          _hf_then_st(_bert(15), _pool("mean", include_prompt=False), prompts=PROMPTS), prompted=True),
    Setup("bert-layernorm", "Pooling + Dense + LayerNorm module + Normalize", ("ST LayerNorm module fine-tunes",),
          _hf_then_st(_bert(16), _pool("mean", dense=((32, GELU, True),), layer_norm=True))),
    Setup("bert-truncate-dim", "truncate_dim 16 saved in config_sentence_transformers.json (slice after Normalize)",
          ("Matryoshka fine-tunes saved with truncate_dim",), _hf_then_st(_bert(17), _pool("mean"), truncate_dim=16)),
    Setup("bert-prompts", "saved query/document prompts (ST 6 save)", ("intfloat/e5-base-v2 with prompts",),
          _hf_then_st(_bert(18), _pool("mean"), prompts=PROMPTS), prompted=True),
    # --- RoBERTa / XLM-R / ModernBERT / MPNet ---
    Setup("roberta-mean", "RoBERTa (byte-level BPE), tokenizer limit 512, positions 514", (
        "sentence-transformers/all-distilroberta-v1",), _hf_then_st(lambda d: roberta_hf(d, seed=20), _pool("mean"))),
    Setup("xlmr-cls", "XLM-R, CLS pooling, transformers-5 config (no position_embedding_type)",
          ("BAAI/bge-m3 fine-tunes",), _hf_then_st(lambda d: roberta_hf(d, seed=21, xlmr=True), _pool("cls"))),
    Setup("xlmr-mean", "XLM-R, mean pooling, transformers-5 config (no position_embedding_type)",
          ("intfloat/multilingual-e5-base fine-tunes",),
          _hf_then_st(lambda d: roberta_hf(d, seed=22, xlmr=True), _pool("mean"))),
    Setup("xlmr-mean-pet", "XLM-R, mean pooling, config with position_embedding_type (transformers 4 save)",
          ("sentence-transformers/paraphrase-multilingual-mpnet-base-v2-style XLM-R", "intfloat/multilingual-e5-large"),
          _hf_then_st(lambda d: roberta_hf(d, seed=23, xlmr=True), _pool("mean"),
                      then=lambda d: _edit_json(d / "config.json", position_embedding_type="absolute"))),
    Setup("modernbert-mean", "ModernBERT, mean pooling (local attention windows crossed)",
          ("nomic-ai/modernbert-embed-base",), _hf_then_st(lambda d: modernbert_hf(d, seed=24), _pool("mean"))),
    Setup("modernbert-cls", "ModernBERT, CLS pooling", ("Alibaba-NLP/gte-modernbert-base",),
          _hf_then_st(lambda d: modernbert_hf(d, seed=25), _pool("cls"))),
    Setup("distilbert-mean-dense", "DistilBERT, mean pooling + Dense(Tanh), no Normalize",
          ("sentence-transformers/distiluse-base-multilingual-cased-v2",
           "sentence-transformers/msmarco-distilbert-base-v4"),
          _hf_then_st(lambda d: distilbert_hf(d, seed=27), _pool("mean", normalize=False, dense=((32, TANH, True),))),
          expected="refused", reason="vLLM 0.32 has no DistilBERT model; its Transformers backend fails at the start "
          "(DistilBERT's attention does not dispatch through the Transformers attention interface)"),
    Setup("t5-encoder-mean-dense", "T5 encoder, mean pooling + Dense(Identity, no bias) + Normalize",
          ("sentence-transformers/sentence-t5-base", "sentence-transformers/gtr-t5-base"),
          _hf_then_st(lambda d: t5_encoder_hf(d, seed=28), _pool("mean", dense=((64, IDENTITY, False),))),
          expected="refused", reason="vLLM 0.32 has no T5 encoder model; its Transformers backend fails at the start "
          "(T5Stack.forward takes no position_ids)"),
    Setup("camembert-mean", "CamemBERT (RoBERTa under another model_type), mean + Normalize; vLLM's Transformers "
          "backend runs it with 0-based positions (1 − cos 0.11), its native XLM-R model reproduces it",
          ("dangvantuan/sentence-camembert-base", "Lajavaness/sentence-camembert-large"),
          _hf_then_st(lambda d: camembert_hf(d, seed=29), _pool("mean"))),
    Setup("mpnet-mean", "MPNet, mean pooling + Normalize", ("sentence-transformers/all-mpnet-base-v2",),
          _hf_then_st(lambda d: mpnet_hf(d, seed=26), _pool("mean")), expected="refused",
          reason="vLLM 0.32 has no MPNet model and its Transformers backend rejects MPNetModel"),
    Setup("static-embedding", "StaticEmbedding first module (no transformer)",
          ("sentence-transformers/static-retrieval-mrl-en-v1", "minishlab/potion-base-8M"), _static_embedding,
          expected="refused", reason="not a transformer: nothing for vLLM to run"),
    # --- decoders, last token with EOS ---
    Setup("qwen2-last", "Qwen2 decoder, last-token pooling, EOS appended by the tokenizer, left padding",
          ("Alibaba-NLP/gte-Qwen2-1.5B-instruct fine-tunes",),
          _hf_then_st(_decoder("qwen2", 30, padding_side="left"), _pool("lasttoken"))),
    Setup("qwen3-last", "Qwen3 decoder, last-token pooling, EOS appended, left padding (ST 6 save: Qwen3Model)",
          ("Qwen/Qwen3-Embedding-0.6B fine-tunes",),
          _hf_then_st(_decoder("qwen3", 31, padding_side="left"), _pool("lasttoken"))),
    Setup("mistral-last", "Mistral decoder with Mistral's SentencePiece tokenizer, <s> … </s>, last token",
          ("intfloat/e5-mistral-7b-instruct fine-tunes", "Salesforce/SFR-Embedding-Mistral"),
          _hf_then_st(_decoder("mistral", 32), _pool("lasttoken"))),
    Setup("llama-last", "Llama decoder (byte-level BPE, <|begin_of_text|> … <|end_of_text|>), last token",
          ("Llama-3-based embedders",), _hf_then_st(_decoder("llama", 33), _pool("lasttoken"))),
    Setup("qwen2-is-causal-false", "Qwen2 decoder whose config.json says is_causal: false (gte-Qwen2's repos "
          "since 2025-03): bidirectional in transformers 5 and in vLLM", ("Alibaba-NLP/gte-Qwen2-7B-instruct",),
          _hf_then_st(_decoder("qwen2", 34), _pool("lasttoken"),
                      then=lambda d: _edit_json(d / "config.json", is_causal=False))),
    Setup("gemma3-bidirectional-2dense", "Gemma3 bidirectional encoder, mean pooling + Dense + Dense (Identity, no "
          "bias) + Normalize, tokenizer limit 1024 < positions 2048", ("google/embeddinggemma-300m",),
          _hf_then_st(lambda d: gemma3_hf(d, seed=35), _pool("mean", dense=((256, IDENTITY, False),
                                                                                 (64, IDENTITY, False))))),
    # --- cross-encoders ---
    Setup("ce-bert-1label", "BERT cross-encoder, 1 label, default Sigmoid (ST 6 save)",
          ("cross-encoder/ms-marco-MiniLM-L6-v2",), _cross_encoder(_bert(40, head="classifier")), kind="cross-encoder"),
    Setup("ce-bert-maxlen32", "BERT cross-encoder saved with max_length 32 (only in tokenizer_config.json)",
          ("cross-encoder/ms-marco-TinyBERT-L2-v2 saved with a max_length",),
          _cross_encoder(_bert(41, head="classifier"), max_length=32), kind="cross-encoder"),
    Setup("ce-bert-2label", "BERT cross-encoder, 2 labels, ST default activation (Identity: raw logits); no "
          "reference score exists (mteb and CrossEncoder.rank refuse two labels): scored as P(relevant), the softmax "
          "of predict()'s logits", ("cross-encoder/nli-deberta-v3-style 2-label heads",),
          _cross_encoder(_bert(42, head="classifier", num_labels=2)), kind="cross-encoder"),
    Setup("ce-bert-2label-softmax", "BERT cross-encoder, 2 labels, Softmax saved (score = P(last label))",
          ("2-label rerankers saved with activation_fn=Softmax",),
          _cross_encoder(_bert(43, head="classifier", num_labels=2), activation=_Lazy(_act("Softmax"))),
          kind="cross-encoder"),
    Setup("ce-bert-identity-st6", "BERT cross-encoder, Identity activation saved by ST 6 (in "
          "config_sentence_transformers.json)", ("mixedbread-ai/mxbai-rerank-base-v1 (raw logits)",),
          _cross_encoder(_bert(44, head="classifier"), activation=IDENTITY), kind="cross-encoder"),
    Setup("ce-bert-identity-st53", "BERT cross-encoder, Identity activation as ST ≤ 5.3 saved it (config.json)",
          ("cross-encoder checkpoints saved before ST 5.4",),
          _cross_encoder_st53(_bert(45, head="classifier"), "torch.nn.modules.linear.Identity"), kind="cross-encoder"),
    Setup("ce-bert-regression", "BERT cross-encoder with problem_type regression in config.json (ST ignores it: "
          "Sigmoid)", ("cross-encoder/stsb-distilroberta-base-style regression heads",),
          _cross_encoder(_bert(46, head="classifier"), then=_set_problem_type_regression), kind="cross-encoder"),
    Setup("ce-xlmr-1label", "XLM-R cross-encoder, transformers-5 config",
          ("BAAI/bge-reranker-v2-m3", "BAAI/bge-reranker-base"),
          _cross_encoder(lambda d: roberta_hf(d, seed=47, xlmr=True, head="classifier")), kind="cross-encoder"),
    Setup("ce-modernbert-1label", "ModernBERT cross-encoder", ("Alibaba-NLP/gte-reranker-modernbert-base",
                                                                "ettin rerankers"),
          _cross_encoder(lambda d: modernbert_hf(d, seed=48, head="classifier")), kind="cross-encoder"),
    Setup("ce-debertav2-1label", "DeBERTa-v2 cross-encoder", ("mixedbread-ai/mxbai-rerank-base-v1",
                                                               "mixedbread-ai/mxbai-rerank-xsmall-v1"),
          _cross_encoder(lambda d: debertav2_classifier_hf(d, seed=49)), kind="cross-encoder", expected="refused",
          reason="vLLM 0.32 has no DeBERTa-v2 model and its Transformers backend rejects "
                 "DebertaV2ForSequenceClassification"),
    Setup("qwen3-llm-reranker", "Qwen3 causal LM scored from yes/no logits with mteb's Qwen3-Reranker template",
          ("Qwen/Qwen3-Reranker-0.6B",), _qwen3_reranker, kind="cross-encoder", reference="mteb-qwen3-reranker"),
)

SETUPS_BY_ID = {s.id: s for s in SETUPS}
assert len(SETUPS_BY_ID) == len(SETUPS), "setup ids must be unique"


# --- building, once per fingerprint --------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def fingerprint() -> str:
    """Changes when a builder or a library that writes the files changes: cached builds are keyed by it (once per
    process: the files and installed versions it reads do not change during a run; ~10 ms a call)."""
    digest = hashlib.sha256()
    for name in ("model_zoo.py", "tiny_models.py", "registry_zoo.py"):
        path = HERE / name
        if path.exists():
            digest.update(path.read_bytes())
    for dist in ("torch", "transformers", "sentence-transformers", "tokenizers", "mistral_common"):
        digest.update(f"{dist}={_version(dist)};".encode())
    digest.update(minilm_path().joinpath("tokenizer.json").read_bytes())
    return digest.hexdigest()[:16]


def default_root() -> Path:
    """Where builds are kept: ``MTEB_VLLM_ZOO_DIR`` or the temp folder, under the fingerprint."""
    base = Path(os.environ.get("MTEB_VLLM_ZOO_DIR") or Path(tempfile.gettempdir()) / "mteb-vllm-model-zoo")
    return base / fingerprint()


STALE_SECONDS = 24 * 3600


@functools.lru_cache(maxsize=None)
def prune_stale_roots(root: Path) -> None:
    """Remove builds of other fingerprints untouched for a day (about 0.4 GB each). A younger one may belong to
    another checkout's run in progress, so it stays."""
    import time

    if not root.parent.is_dir():
        return
    for sibling in root.parent.iterdir():
        if sibling != root and sibling.is_dir() and time.time() - sibling.stat().st_mtime > STALE_SECONDS:
            shutil.rmtree(sibling, ignore_errors=True)


def build(setup: Setup | str, root: Path | None = None) -> Path:
    """The setup's folder, built on first use (into a scratch folder moved in place, so an interrupted build is
    never mistaken for a finished one)."""
    setup = SETUPS_BY_ID[setup] if isinstance(setup, str) else setup
    root = Path(root) if root is not None else default_root()
    folder = root / setup.id
    if (folder / ".zoo-complete").exists():
        os.utime(root)  # in use: prune_stale_roots of another checkout leaves it alone
        return folder
    root.mkdir(parents=True, exist_ok=True)
    prune_stale_roots(root)
    scratch = Path(tempfile.mkdtemp(prefix=f".{setup.id}-", dir=root))
    try:
        target = scratch / "model"
        target.mkdir()
        setup.builder(target)
        (target / ".zoo-complete").write_text(setup.id)
        if folder.exists() and not (folder / ".zoo-complete").exists():
            shutil.rmtree(folder)  # a folder this function never finished (an older layout)
        try:
            target.rename(folder)
        except OSError:
            # another process (a pytest-xdist worker, another checkout's run) finished the same build first and
            # may be reading it: keep that one, drop ours
            if not (folder / ".zoo-complete").exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder
