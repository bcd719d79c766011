"""The sentence-transformers stand-ins and the module layer, against sentence-transformers itself, with no engine.

Each model here is a tiny random BERT saved by sentence-transformers 6 with the module chain under test. Our wrapper
runs it through mteb's loader, the stand-in's tokenization and :class:`StModulesBackend` over
:class:`~hf_backend.HfBackend` (the transformer in Hugging Face transformers instead of vLLM); the reference is
``SentenceTransformer`` / ``CrossEncoder`` on the same folder. Equal means equal to float32 rounding.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_backend import HfBackend
from mteb_vllm import VllmCrossEncoderWrapper, VllmEncoderWrapper
from mteb_vllm.errors import UnsupportedModelError

pytestmark = pytest.mark.slow  # builds and runs sentence-transformers reference models (seconds each)

TEXTS = ["The weather is lovely today.", "He drove to the stadium in a car that was far too small for him " * 3,
         "ok", "  spaced   words  ", "UPPER and lower Case", "a " * 40, "same", "same"]


def _bert(dst: Path, minilm_path: str, seed: int = 0, **config) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    dst.mkdir(parents=True, exist_ok=True)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, **config)).eval().save_pretrained(dst)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (Path(minilm_path) / name).exists():
            shutil.copy(Path(minilm_path) / name, dst / name)
    return dst


def _st_folder(tmp: Path, minilm_path: str, name: str, pooling: str, *, include_prompt: bool = True,
               dense: str | None = "torch.nn.modules.activation.Tanh", layer_norm: bool = False,
               normalize: bool = True, max_seq_length: int = 24, drop_activation_key: bool = False) -> str:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import LayerNorm, Pooling

    hf = _bert(tmp / f"{name}-hf", minilm_path)
    torch.manual_seed(1)
    modules = [Transformer(str(hf), max_seq_length=max_seq_length),
               Pooling(32, pooling, include_prompt=include_prompt)]
    width = 32 * (len(pooling) if isinstance(pooling, tuple) else 1)
    if dense is not None:
        act = {"torch.nn.modules.activation.Tanh": torch.nn.Tanh(), "torch.nn.modules.activation.GELU":
               torch.nn.GELU(), "identity": torch.nn.Identity()}[dense]
        modules.append(Dense(width, 16, activation_function=act))
        width = 16
    if layer_norm:
        modules.append(LayerNorm(width))
    if normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, device="cpu",
                                prompts={"query": "query: ", "document": ""})
    out = tmp / name
    model.save(str(out))
    if drop_activation_key:
        for cfg in out.glob("*_Dense/config.json"):
            data = json.loads(cfg.read_text())
            data.pop("activation_function", None)
            cfg.write_text(json.dumps(data))
    return str(out)


def _hf_backend(config, **options):
    return HfBackend(config)


def _compare(folder: str, **wrapper_kwargs) -> tuple[float, float]:
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(folder, device="cpu")
    ours = VllmEncoderWrapper(folder, backend="hf_backend:HfBackend", **wrapper_kwargs)
    plain = np.abs(ours.embed_texts(TEXTS) - ref.encode(TEXTS)).max()
    st = ours._st  # the same call through the stand-in, with a prompt (prompt length, include_prompt)
    query = np.abs(np.asarray(st.encode_query(TEXTS)) - ref.encode_query(TEXTS)).max()
    ours.close()
    return float(plain), float(query)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, minilm_path):
    tmp = tmp_path_factory.mktemp("st-models")
    return tmp, minilm_path


@pytest.mark.parametrize("pooling,include_prompt", [
    ("cls", True), ("mean", True), ("lasttoken", True), ("max", True), ("weightedmean", True),
    ("mean_sqrt_len_tokens", True), ("mean", False), ("weightedmean", False), ("cls", False), (("cls", "mean"), True),
])
def test_every_pooling_mode_matches_sentence_transformers(folders, pooling, include_prompt):
    tmp, minilm = folders
    name = "-".join(pooling if isinstance(pooling, tuple) else (pooling,)) + f"-{include_prompt}"
    folder = _st_folder(tmp, minilm, name, pooling, include_prompt=include_prompt)
    plain, query = _compare(folder)
    assert plain < 1e-6 and query < 1e-6


def test_dense_without_a_saved_activation_is_tanh_and_layer_norm_runs(folders):
    tmp, minilm = folders
    folder = _st_folder(tmp, minilm, "dense-default", "mean", drop_activation_key=True, layer_norm=True)
    assert max(_compare(folder)) < 1e-6


def test_the_context_length_saved_by_sentence_transformers_6_is_the_one_used(folders):
    tmp, minilm = folders
    folder = _st_folder(tmp, minilm, "short", "mean", max_seq_length=8)
    assert json.loads((Path(folder) / "tokenizer_config.json").read_text())["model_max_length"] == 8  # the premise
    wrapper = VllmEncoderWrapper(folder, backend="hf_backend:HfBackend")
    assert wrapper.engine.max_model_len == 8
    assert max(_compare(folder)) < 1e-6


def test_a_folder_without_sentence_transformers_files_pools_like_sentence_transformers(folders):
    """sentence-transformers uses Transformer + mean pooling there (vLLM's own default for BERT is CLS)."""
    tmp, minilm = folders
    folder = str(_bert(tmp / "plain-hf", minilm, seed=5))
    wrapper = VllmEncoderWrapper(folder, backend="hf_backend:HfBackend")
    assert wrapper.config.pooler_config["pooling_type"] == "MEAN"
    assert max(_compare(folder)) < 1e-6


def test_modules_the_engine_cannot_feed_are_refused_before_anything_runs(folders):
    tmp, minilm = folders
    folder = Path(_st_folder(tmp, minilm, "lstm", "mean", dense=None))
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(1, {"idx": 1, "name": "1", "path": "1_LSTM",
                       "type": "sentence_transformers.sentence_transformer.modules.lstm.LSTM"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_LSTM").mkdir()
    (folder / "1_LSTM" / "lstm_config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                     "hidden_dim": 8, "num_layers": 1}))
    with pytest.raises((UnsupportedModelError, Exception), match="LSTM|lstm"):
        VllmEncoderWrapper(str(folder), backend="fake")


def _cross_encoder(tmp: Path, minilm: str, name: str, num_labels: int, activation: str | None) -> str:
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(3)
    hf = tmp / f"{name}-hf"
    hf.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                                             num_labels=num_labels)).eval().save_pretrained(hf)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (Path(minilm) / f).exists():
            shutil.copy(Path(minilm) / f, hf / f)
    act = {None: None, "identity": torch.nn.Identity(), "sigmoid": torch.nn.Sigmoid()}[activation]
    model = CrossEncoder(str(hf), device="cpu", max_length=40, **({"activation_fn": act} if act else {}))
    out = tmp / name
    model.save(str(out))
    return str(out)


@pytest.mark.parametrize("num_labels,activation", [(1, None), (1, "identity"), (2, None)])
def test_cross_encoders_score_as_cross_encoder_predict_does(folders, num_labels, activation):
    from sentence_transformers import CrossEncoder

    tmp, minilm = folders
    folder = _cross_encoder(tmp, minilm, f"ce-{num_labels}-{activation}", num_labels, activation)
    queries = ["which river", "a b c " * 30, "cats"]
    docs = ["the longest river " * 20, "short", "cats purr"]
    ref = np.asarray(CrossEncoder(folder, device="cpu").predict(list(zip(queries, docs)),
                                                                apply_softmax=num_labels == 2))
    ours = VllmCrossEncoderWrapper(folder, backend="hf_backend:HfBackend").score_pairs(queries, docs)
    expected = ref if ref.ndim == 1 else ref[:, 1]  # two labels: the "relevant" column
    assert np.abs(ours - expected).max() < 1e-6


def test_a_loader_module_imported_after_an_earlier_build_gets_the_stand_in_too():
    """The modules searched for ``SentenceTransformer`` bindings are kept between builds (the scan costs ~10 ms);
    a module imported since is searched as well, and every binding is put back after the block."""
    import sys
    import types

    import sentence_transformers

    from mteb_vllm import reference

    original = sentence_transformers.SentenceTransformer
    with reference._stand_ins({"SentenceTransformer": "first"}):
        pass
    late = types.ModuleType("mteb._a_loader_imported_late")
    late.SentenceTransformer = original
    sys.modules[late.__name__] = late
    try:
        with reference._stand_ins({"SentenceTransformer": "stand-in"}):
            assert late.SentenceTransformer == "stand-in"
            assert sentence_transformers.SentenceTransformer == "stand-in"
        assert late.SentenceTransformer is original and sentence_transformers.SentenceTransformer is original
    finally:
        del sys.modules[late.__name__]


def test_a_loader_that_loads_weights_itself_is_refused():
    from mteb.models import ModelMeta

    class OwnWeights:
        def __init__(self, name, revision=None, **kwargs):
            from transformers import AutoModel

            from mteb_vllm.testing.fake_backend import fake_model_folder

            AutoModel.from_pretrained(fake_model_folder())

    meta = ModelMeta.create_empty(overwrites={"name": "test/own-weights", "revision": "abc", "loader": OwnWeights})
    with pytest.raises(UnsupportedModelError, match="loads its weights without sentence-transformers"):
        VllmEncoderWrapper(meta, backend="fake")


def test_a_loader_building_a_sparse_encoder_is_refused():
    from mteb.models import ModelMeta

    class Sparse:
        def __init__(self, name, revision=None, **kwargs):
            from sentence_transformers import SparseEncoder

            SparseEncoder(name)

    meta = ModelMeta.create_empty(overwrites={"name": "test/sparse", "revision": "abc", "loader": Sparse})
    with pytest.raises(UnsupportedModelError, match="SparseEncoder"):
        VllmEncoderWrapper(meta, backend="fake")


def test_loader_arguments_that_change_the_transformer_are_refused():
    from mteb.models import ModelMeta
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    meta = ModelMeta.create_empty(overwrites={"name": "test/config-kwargs", "revision": "abc",
                                              "loader": SentenceTransformerEncoderWrapper,
                                              "loader_kwargs": {"config_kwargs": {"hidden_dropout_prob": 0.5,
                                                                                  "num_hidden_layers": 1}}})
    with pytest.raises(UnsupportedModelError, match="changes the model config"):
        VllmEncoderWrapper(meta, backend="fake")


def test_a_two_label_head_with_another_activation_is_refused(folders):
    """Two labels have no reference score (mteb and CrossEncoder.rank refuse them): P(relevant) is defined from raw
    logits or a saved Softmax only; a saved Sigmoid over two labels is refused before anything runs."""
    tmp, minilm = folders
    folder = _cross_encoder(tmp, minilm, "ce-2-sigmoid", 2, "sigmoid")
    with pytest.raises(UnsupportedModelError, match="2 labels and activation Sigmoid"):
        VllmCrossEncoderWrapper(folder, backend="fake")
