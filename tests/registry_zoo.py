"""Registry names of mteb laid out in an offline Hugging Face hub cache, with tiny random weights (issue 16).

Each entry is the real architecture, shrunk (hidden 64-128, 2 layers), with the repository's
sentence-transformers files and tokenizer behaviour as far as they can be reconstructed offline, at the revision
mteb's registry pins (``models--org--name/snapshots/<revision>/``, ``refs/main``), so ``mteb.get_model(name)``
(mteb's own loader) and our wrapper both read it as they would read the hub. What was reconstructed, and from
what, is said per entry in ``reconstruction``: the repositories' files are not available offline, so module
lists, pooling modes, limits and prompts come from mteb's loader comments, the mteb / vLLM / sentence-transformers
issue threads, the survey in /work/survey and the models' documentation. Where a real detail could not be
confirmed the entry says what was assumed.

The tokenizer behaviours that decide the token ids are reproduced exactly where mteb's loader depends on them:
e5-mistral's tokenizer.json adds only ``<s>`` while its tokenizer_config.json says ``add_eos_token`` (under
transformers 5 only the loader's ``add_bos_token`` + ``add_eos_token`` kwargs give ``<s> ... </s>``);
gte-Qwen2's adds no EOS unless the loader's ``add_eos_token=True`` asks for it; Qwen3-Embedding's appends
``<|endoftext|>`` itself.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import model_zoo as zoo
from model_zoo import _edit_json, as_st53_layout, pool, st_save

MISTRAL_VOCAB = 32000


@dataclass(frozen=True)
class RegistryModel:
    """One registry name: what its reference is, how the stand-in was made, and what our wrapper must do."""

    name: str
    covers: str
    reconstruction: str
    builder: Callable[[Path], None]
    expected: Literal["exact", "refused"] = "exact"
    reason: str = ""

    @property
    def revision(self) -> str:
        import mteb

        return mteb.get_model_meta(self.name).revision


def _tiny_decoder(family: str, vocab_size: int, ids: dict[str, int], **overrides: Any) -> Any:
    import transformers as tf

    names = {"mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}
    kwargs: dict[str, Any] = dict(vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1,
                                  bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids.get("pad"))
    if family != "qwen2":
        kwargs["head_dim"] = 32
    kwargs.update(overrides)
    config = getattr(tf, f"{names[family]}Config")(**kwargs)
    return getattr(tf, f"{names[family]}Model")(config)


def _st_repo(dst: Path, hf_dir: Path, modules: Callable[[int], list[Any]], *, seed: int, max_seq_length: int,
             do_lower_case: bool = False, version: str, tokenizer_max_length: Any,
             st_config: dict[str, Any] | None = None) -> None:
    """A repository written by sentence-transformers 2.x-5.3: the 6.3 save rewritten into that layout, with the
    tokenizer files of the base folder (a 6.3 save rewrites them, e.g. as ``TokenizersBackend``)."""
    st_save(dst, hf_dir, modules, seed=seed)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (hf_dir / name).exists():
            shutil.copy(hf_dir / name, dst / name)
    as_st53_layout(dst, max_seq_length=max_seq_length, do_lower_case=do_lower_case, version=version,
                   tokenizer_max_length=tokenizer_max_length)
    if st_config:
        _edit_json(dst / "config_sentence_transformers.json", **st_config)


def _scratch() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="registry-zoo-")


# --- the entries ---------------------------------------------------------------------------------------------
def _e5_mistral(dst: Path) -> None:
    with _scratch() as tmp:
        hf = Path(tmp)
        ids = zoo.mistral_sentencepiece(hf, add_eos=False, model_max_length=32768)
        zoo._seed(200)
        zoo._save_hf(_tiny_decoder("mistral", MISTRAL_VOCAB, ids, max_position_embeddings=32768,
                                   sliding_window=4096, rope_theta=10000.0), hf)
        _st_repo(dst, hf, pool("lasttoken"), seed=201, max_seq_length=4096, version="2.4.0.dev0",
                 tokenizer_max_length=None, st_config={"prompts": {
                     "web_search_query": "Instruct: Given a web search query, retrieve relevant passages that "
                                         "answer the query\nQuery: ",
                     "sts_query": "Instruct: Retrieve semantically similar text.\nQuery: ",
                     "summarization_query": "Instruct: Given a news summary, retrieve other semantically similar "
                                            "summaries\nQuery: ",
                     "bitext_query": "Instruct: Retrieve parallel sentences.\nQuery: "}, "default_prompt_name": None})
    # The repo's own tokenizer_config.json asks for both special tokens; transformers 5 keeps tokenizer.json's
    # post-processor (``<s> $A``) whatever it says: only the loader's kwargs bring the ``</s>`` back.
    _edit_json(dst / "tokenizer_config.json", add_bos_token=True, add_eos_token=True, pad_token="</s>",
               padding_side="right", model_max_length=1000000000000000019884624838656)
    _edit_json(dst / "config.json", architectures=["MistralModel"])


def _qwen3_embedding(dst: Path) -> None:
    with _scratch() as tmp:
        hf = Path(tmp)
        ids = zoo.decoder_bpe(hf, family="qwen", model_max_length=131072, padding_side="left")
        zoo._seed(210)
        zoo._save_hf(_tiny_decoder("qwen3", ids["vocab_size"], ids, max_position_embeddings=32768,
                                   rope_theta=1000000.0, tie_word_embeddings=True), hf)
        _st_repo(dst, hf, pool("lasttoken"), seed=211, max_seq_length=32768, version="3.4.1",
                 tokenizer_max_length=131072, st_config={"prompts": {
                     "query": "Instruct: Given a web search query, retrieve relevant passages that answer the "
                              "query\nQuery:", "document": ""}, "default_prompt_name": None})
    # The real checkpoint: config says Qwen3ForCausalLM, the weights are the bare model's (no "model." prefix,
    # no lm_head), as sentence-transformers saves them.
    _edit_json(dst / "config.json", architectures=["Qwen3ForCausalLM"])


def _xlmr_repo(dst: Path, *, seed: int, mode: str, max_seq_length: int, positions: int, version: str,
               st_config: dict[str, Any] | None = None) -> None:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    with _scratch() as tmp:
        hf = Path(tmp)
        vocab = zoo.xlmr_unigram(hf, model_max_length=max_seq_length)
        zoo._seed(seed)
        config = XLMRobertaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=2, max_position_embeddings=positions, pad_token_id=1,
                                  bos_token_id=0, eos_token_id=2, initializer_range=0.1)
        zoo._save_hf(XLMRobertaModel(config, add_pooling_layer=False), hf)
        _st_repo(dst, hf, pool(mode), seed=seed + 1, max_seq_length=max_seq_length, version=version,
                 tokenizer_max_length=max_seq_length, st_config=st_config)
    # saved with transformers 4, whose XLM-R config carries the attribute
    _edit_json(dst / "config.json", position_embedding_type="absolute")


def _multilingual_e5_instruct(dst: Path) -> None:
    _xlmr_repo(dst, seed=220, mode="mean", max_seq_length=512, positions=514, version="2.4.0.dev0")


def _bge_m3(dst: Path) -> None:
    _xlmr_repo(dst, seed=230, mode="cls", max_seq_length=8192, positions=8194, version="2.2.2")


def _gte_qwen2(dst: Path) -> None:
    with _scratch() as tmp:
        hf = Path(tmp)
        ids = zoo.decoder_bpe(hf, family="qwen", model_max_length=32768)
        # the repo's tokenizer.json appends nothing: the loader's add_eos_token=True rebuilds the post-processor
        tok = json.loads((hf / "tokenizer.json").read_text())
        tok["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                                 "use_regex": False}
        (hf / "tokenizer.json").write_text(json.dumps(tok))
        zoo._seed(240)
        zoo._save_hf(_tiny_decoder("qwen2", ids["vocab_size"], ids, max_position_embeddings=32768,
                                   rope_theta=1000000.0), hf)
        _st_repo(dst, hf, pool("lasttoken"), seed=241, max_seq_length=32768, version="2.7.0",
                 tokenizer_max_length=32768, st_config={"prompts": {
                     "query": "Instruct: Given a web search query, retrieve relevant passages that answer the "
                              "query\nQuery: "}, "default_prompt_name": None})
    _edit_json(dst / "tokenizer_config.json", add_eos_token=True)
    _edit_json(dst / "config.json", architectures=["Qwen2ForCausalLM"], is_causal=True, auto_map={
        "AutoModel": "modeling_qwen.Qwen2Model", "AutoModelForCausalLM": "modeling_qwen.Qwen2ForCausalLM",
        "AutoModelForSequenceClassification": "modeling_qwen.Qwen2ForSequenceClassification"})


EMBEDDINGGEMMA_PROMPTS = {
    "query": "task: search result | query: ", "document": "title: none | text: ",
    "BitextMining": "task: search result | query: ", "Clustering": "task: clustering | query: ",
    "Classification": "task: classification | query: ", "InstructionRetrieval": "task: code retrieval | query: ",
    "MultilabelClassification": "task: classification | query: ",
    "PairClassification": "task: sentence similarity | query: ", "Reranking": "task: search result | query: ",
    "Retrieval": "task: search result | query: ", "Retrieval-query": "task: search result | query: ",
    "Retrieval-document": "title: none | text: ", "STS": "task: sentence similarity | query: ",
    "Summarization": "task: summarization | query: ",
}


def _embeddinggemma(dst: Path) -> None:
    from transformers import Gemma3TextConfig, Gemma3TextModel

    with _scratch() as tmp:
        hf = Path(tmp)
        ids = zoo.decoder_bpe(hf, family="gemma", model_max_length=2048)
        zoo._seed(250)
        config = Gemma3TextConfig(vocab_size=ids["vocab_size"], hidden_size=128, intermediate_size=256,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                                  max_position_embeddings=2048, sliding_window=512,
                                  layer_types=["sliding_attention", "full_attention"],
                                  use_bidirectional_attention=True, bos_token_id=ids["bos"],
                                  eos_token_id=ids["eos"], pad_token_id=ids["pad"], query_pre_attn_scalar=32,
                                  initializer_range=0.1)
        zoo._save_hf(Gemma3TextModel(config), hf)
        dense = ((512, zoo.IDENTITY.make(), False), (128, zoo.IDENTITY.make(), False))
        _st_repo(dst, hf, pool("mean", dense=dense), seed=251, max_seq_length=2048, version="5.1.0",
                 tokenizer_max_length=2048, st_config={"prompts": EMBEDDINGGEMMA_PROMPTS,
                                                       "default_prompt_name": None})


def _bert_repo(dst: Path, *, seed: int, mode: str, normalize: bool, max_seq_length: int, do_lower_case: bool,
               positions: int, version: str, tokenizer_max_length: int,
               st_config: dict[str, Any] | None = None, output_shift: float = 0.0) -> None:
    with _scratch() as tmp:
        hf = zoo.bert_hf(Path(tmp) / "hf", seed=seed, max_position_embeddings=positions,
                         model_max_length=tokenizer_max_length, output_shift=output_shift)
        _st_repo(dst, hf, pool(mode, normalize=normalize), seed=seed + 1, max_seq_length=max_seq_length,
                 do_lower_case=do_lower_case, version=version, tokenizer_max_length=tokenizer_max_length,
                 st_config=st_config)


def _nomic_v15(dst: Path) -> None:
    # output_shift: vectors far from zero-mean per row, as trained ones are, so that the loader's layer_norm
    # (which centres each row) changes cosines measurably
    _bert_repo(dst, seed=260, mode="mean", normalize=False, max_seq_length=8192, do_lower_case=False,
               positions=8192, version="2.4.0.dev0", tokenizer_max_length=512, output_shift=1.0, st_config={"prompts": {
                   "search_query": "search_query: ", "search_document": "search_document: ",
                   "classification": "classification: ", "clustering": "clustering: "}, "default_prompt_name": None})


def _bge_large(dst: Path) -> None:
    _bert_repo(dst, seed=270, mode="cls", normalize=True, max_seq_length=512, do_lower_case=True, positions=512,
               version="2.2.2", tokenizer_max_length=512)


def _mxbai_large(dst: Path) -> None:
    _bert_repo(dst, seed=280, mode="cls", normalize=False, max_seq_length=512, do_lower_case=False, positions=512,
               version="2.5.1", tokenizer_max_length=512, st_config={"prompts": {
                   "query": "Represent this sentence for searching relevant passages: ", "passage": ""},
                   "default_prompt_name": None})


def _jina_v3(dst: Path) -> None:
    _xlmr_repo(dst, seed=290, mode="mean", max_seq_length=8192, positions=8194, version="3.1.0")
    modules = json.loads((dst / "modules.json").read_text())
    modules[0]["type"] = "custom_st.Transformer"
    (dst / "modules.json").write_text(json.dumps(modules, indent=2))
    _edit_json(dst / "config.json", architectures=["XLMRobertaLoRA"], auto_map={
        "AutoConfig": "jinaai/xlm-roberta-flash-implementation--configuration_xlm_roberta.XLMRobertaFlashConfig",
        "AutoModel": "jinaai/xlm-roberta-flash-implementation--modeling_lora.XLMRobertaLoRA"},
        lora_adaptations=["retrieval.query", "retrieval.passage", "separation", "classification", "text-matching"],
        lora_rank=4, position_embedding_type="rotary", use_flash_attn=True, model_type="xlm-roberta",
        task_instructions={"retrieval.query": "Represent the query for retrieving evidence documents: ",
                           "retrieval.passage": "Represent the document for retrieval: ",
                           "separation": "", "classification": "", "text-matching": ""})
    (dst / "custom_st.py").write_text(
        "# The repository's sentence-transformers module (remote code, selects a LoRA adapter per task).\n"
        "raise ImportError('custom_st.Transformer is not reproduced offline')\n")


REGISTRY: tuple[RegistryModel, ...] = (
    RegistryModel(
        "intfloat/e5-mistral-7b-instruct",
        "Mistral decoder, last token; mteb's loader passes add_eos_token=True and add_bos_token=True (transformers 5 "
        "otherwise drops the </s> that last-token pooling reads) and instructions on queries",
        "Mistral's real SentencePiece tokenizer (mistral_common); tokenizer.json adds <s> only while "
        "tokenizer_config.json says add_bos_token/add_eos_token (mteb PR 5237); ST 2.x files: lasttoken + "
        "Normalize, max_seq_length 4096 (assumed), prompts without default_prompt_name",
        _e5_mistral),
    RegistryModel(
        "Qwen/Qwen3-Embedding-0.6B",
        "Qwen3 decoder, last token, EOS appended by the tokenizer, left padding; instruction without a trailing "
        "space on queries",
        "config says Qwen3ForCausalLM, bare-model weights (as the real checkpoint); byte-level BPE whose "
        "post-processor appends <|endoftext|>; prompts query/document as the repo's; max_seq_length 32768 (assumed)",
        _qwen3_embedding),
    RegistryModel(
        "intfloat/multilingual-e5-large-instruct",
        "XLM-R, mean + Normalize, 512 tokens; instructions on queries",
        "XLM-R config saved by transformers 4 (position_embedding_type present), Unigram tokenizer with XLM-R's "
        "specials, ST 2.x files",
        _multilingual_e5_instruct),
    RegistryModel(
        "BAAI/bge-m3",
        "XLM-R, CLS + Normalize, 8192 tokens (positions 8194); dense head only",
        "as multilingual-e5 with bge-m3's limits; the sparse and ColBERT heads' files are left out (mteb never "
        "reads them)",
        _bge_m3),
    RegistryModel(
        "Alibaba-NLP/gte-Qwen2-1.5B-instruct",
        "Qwen2 decoder, last token; mteb's loader passes add_eos_token=True and no trust_remote_code (transformers' "
        "own, causal Qwen2)",
        "config says Qwen2ForCausalLM with the repo's auto_map and is_causal: true (the pinned revision predates "
        "the 2025-03 flip to false; assumed), tokenizer.json appends no EOS",
        _gte_qwen2),
    RegistryModel(
        "google/embeddinggemma-300m",
        "bidirectional Gemma3, mean + Dense + Dense (no bias, Identity) + Normalize, task prompts from the repo's "
        "config_sentence_transformers.json",
        "Gemma3TextModel with use_bidirectional_attention, sliding window 512, 2048 tokens; BPE tokenizer adding "
        "<bos> and <eos>; the prompts as published on the model card",
        _embeddinggemma),
    RegistryModel(
        "nomic-ai/nomic-embed-text-v1.5",
        "mteb's NomicWrapper: prompt names, then layer_norm and L2 normalisation of every task's vectors",
        "architecture stand-in: a BertModel (8192 positions) instead of NomicBertModel, whose modelling code is "
        "remote (nomic-ai/nomic-bert-2048) and not reproducible offline; what is tested is the loader and its "
        "post-processing. bert-base-uncased WordPiece, mean pooling, no Normalize, max_seq_length 8192",
        _nomic_v15),
    RegistryModel(
        "jinaai/jina-embeddings-v3",
        "XLM-R with LoRA adapters chosen per task (task=... at encode), remote code",
        "config and modules.json of the repo (XLMRobertaLoRA, custom_st.Transformer), tiny XLM-R weights",
        _jina_v3, expected="refused",
        reason="the reference picks a LoRA adapter per task (remote code) and mteb itself cannot load it here "
               "(sentence-transformers < 5.4 and transformers < 5 required)"),
    RegistryModel(
        "BAAI/bge-large-en-v1.5",
        "BERT, CLS + Normalize, do_lower_case; mteb replaces the prompts with a query instruction",
        "bert-base-uncased WordPiece, ST 2.x files",
        _bge_large),
    RegistryModel(
        "mixedbread-ai/mxbai-embed-large-v1",
        "BERT, CLS, no Normalize; mteb replaces the saved query/passage prompts with its query prompt",
        "bert-base-uncased WordPiece, ST 2.x files with query/passage prompts",
        _mxbai_large),
)

REGISTRY_BY_NAME = {m.name: m for m in REGISTRY}


def build_hub_cache(root: Path | None = None, names: tuple[str, ...] | None = None) -> Path:
    """The offline hub cache with every registry entry at its pinned revision (``refs/main`` points to it).
    Built once per fingerprint, each repository on first use."""
    root = Path(root) if root is not None else zoo.default_root()
    hub = root / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    os.utime(root)  # in use (see model_zoo.prune_stale_roots)
    zoo.prune_stale_roots(root)
    for model in REGISTRY:
        if names is not None and model.name not in names:
            continue
        repo = hub / ("models--" + model.name.replace("/", "--"))
        snapshot = repo / "snapshots" / model.revision
        if (snapshot / ".zoo-complete").exists():
            continue
        scratch = Path(tempfile.mkdtemp(prefix=".registry-", dir=root))
        try:
            target = scratch / "snapshot"
            target.mkdir()
            model.builder(target)
            for junk in ("README.md",):
                (target / junk).unlink(missing_ok=True)
            (target / ".zoo-complete").write_text(model.name)
            if snapshot.exists():
                shutil.rmtree(snapshot)
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            target.rename(snapshot)
            (repo / "refs").mkdir(exist_ok=True)
            (repo / "refs" / "main").write_text(model.revision)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return hub

