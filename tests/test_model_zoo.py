"""The parity suite (issue 16): every setup of tests/model_zoo.py against sentence-transformers on the same folder.

Engine tier, one engine per setup, started and closed one after another in this process, float32 on both sides:
encoders give per-row 1 - cos <= 1e-5 and |norm ratio - 1| <= 1e-5 on real sentences and texts longer than the
context, and the same mteb STS main score (|delta| <= 1e-4; prompted setups also the retrieval score);
cross-encoders give the scores of ``CrossEncoder.predict`` with the saved activation (|delta| <= 1e-5).
Fast tier, no engine: what each folder is (the layout and what sentence-transformers 6.3 reads from it), the
token ids our wrapper hands to the model (at the backend seam) against those sentence-transformers feeds its
model, and refusals before any engine starts.

With ``MTEB_VLLM_ZOO_OUTCOMES=<file>`` every test writes its outcome there (scripts/model_support.py turns that
into the README's model-support table).
"""

from __future__ import annotations

import functools
import json
import warnings

import numpy as np
import pytest
from model_zoo import SETUPS, SETUPS_BY_ID, _act, build, zoo_texts
from zoo_checks import (
    MAX_MAIN_SCORE_DELTA,
    MAX_NORM_ERROR,
    MAX_ONE_MINUS_COS,
    MAX_SCORE_DELTA,
    Outcome,
    SpyBackend,
    captured_inputs,
    describe_difference,
    expect_refused,
    hf_model_of,
    main_score,
    no_engine_start,
    recorded_pool_inputs,
    reference_token_ids,
    retrieval_task,
    row_agreement,
    spy_backend_registered,
    sts_task,
    text_loader,
)


EXACT_ENCODERS = [s for s in SETUPS if s.kind == "encoder" and s.expected == "exact"]
EXACT_CROSS_ENCODERS = [s for s in SETUPS if s.kind == "cross-encoder" and s.expected == "exact"]
REFUSED = [s for s in SETUPS if s.expected == "refused"]
SECTION = "setups"


def _ids(setups):
    return [s.id for s in setups]


def _st(path):
    """The folder's SentenceTransformer, loaded once per module (the tests only read it: attributes, preprocess,
    encode); the layout, special-folder and token-id tests ask for the same folders."""
    return _st_load(str(path))


@functools.lru_cache(maxsize=None)
def _st_load(path: str):
    import torch
    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SentenceTransformer(str(path), device="cpu", model_kwargs={"dtype": torch.float32})


def _query_texts():
    from model_zoo import _demo_rows

    return [q["text"] for q in _demo_rows("queries.jsonl")]


def _reference_wrapper(model):
    from mteb.models import SentenceTransformerEncoderWrapper

    return SentenceTransformerEncoderWrapper(model)


def _encode_queries(wrapper, texts):
    from mteb.types import PromptType

    return wrapper.encode(text_loader(texts), task_metadata=retrieval_task().metadata, hf_split="test",
                          hf_subset="default", prompt_type=PromptType.query)


# --- the zoo itself ------------------------------------------------------------------------------------------
def test_every_setup_says_what_it_covers_and_what_is_expected():
    for s in SETUPS:
        assert s.id and s.covers and s.examples, s
        assert s.kind in ("encoder", "cross-encoder") and s.expected in ("exact", "refused"), s
        assert (s.expected == "refused") == bool(s.reason), f"{s.id}: a refusal needs a reason, exact none"
    required = {"bert-mean", "bert-cls", "bert-cls-dense-tanh", "bert-mean-no-normalize", "bert-st6-maxlen16",
                "bert-st53-maxlen16", "roberta-mean", "xlmr-cls", "xlmr-mean", "xlmr-mean-pet", "modernbert-mean",
                "qwen2-last", "qwen3-last", "mistral-last", "llama-last", "gemma3-bidirectional-2dense",
                "bert-include-prompt-false", "bert-pool-max", "bert-pool-weightedmean", "bert-pool-mean-sqrt-len",
                "bert-layernorm", "bert-no-st-files", "bert-dense-no-activation-key", "bert-st53-lowercase",
                "mpnet-mean", "ce-bert-1label", "ce-bert-2label", "ce-bert-identity-st6", "ce-bert-identity-st53",
                "ce-bert-regression", "ce-xlmr-1label", "ce-modernbert-1label", "qwen3-llm-reranker"}
    assert required <= set(SETUPS_BY_ID), required - set(SETUPS_BY_ID)


def _json(path):
    return json.loads(path.read_text())


def test_st6_and_st53_layouts_are_what_those_releases_write():
    v6 = build("bert-st6-maxlen16")
    assert "max_seq_length" not in _json(v6 / "sentence_bert_config.json")  # 6.x: only in tokenizer_config.json
    assert _json(v6 / "tokenizer_config.json")["model_max_length"] == 16
    assert _json(v6 / "modules.json")[0]["type"] == "sentence_transformers.base.modules.transformer.Transformer"
    assert _json(v6 / "1_Pooling/config.json")["pooling_mode"] == "mean"
    v53 = build("bert-st53-maxlen16")
    assert _json(v53 / "sentence_bert_config.json") == {"max_seq_length": 16, "do_lower_case": False}
    assert [m["type"] for m in _json(v53 / "modules.json")] == [
        "sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
        "sentence_transformers.models.Dense", "sentence_transformers.models.Normalize"]
    pooling = _json(v53 / "1_Pooling/config.json")
    assert pooling["pooling_mode_mean_tokens"] is True and "pooling_mode" not in pooling
    assert "module_input_name" not in _json(v53 / "2_Dense/config.json")
    assert not (v53 / "3_Normalize/config.json").exists()
    assert _json(v53 / "config_sentence_transformers.json")["__version__"]["sentence_transformers"] == "5.3.0"
    assert _st(v6).max_seq_length == 16 and _st(v53).max_seq_length == 16


def test_what_sentence_transformers_reads_from_the_special_folders():
    import torch

    lower = _st(build("bert-st53-lowercase"))
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(str(build("bert-st53-lowercase")))
    assert plain("Hello World")["input_ids"] != plain("hello world")["input_ids"]  # the files alone are cased
    assert lower.tokenizer("Hello World")["input_ids"] == lower.tokenizer("hello world")["input_ids"]  # ST lowers
    bare = _st(build("bert-no-st-files"))
    assert [type(m).__name__ for m in bare] == ["Transformer", "Pooling"] and bare[1].pooling_mode == "mean"
    dense = _st(build("bert-dense-no-activation-key"))
    assert "activation_function" not in _json(build("bert-dense-no-activation-key") / "2_Dense/config.json")
    assert isinstance(dense[2].activation_function, torch.nn.Tanh)
    assert _st(build("roberta-mean")).max_seq_length == 512
    assert _json(build("roberta-mean") / "config.json")["max_position_embeddings"] == 514
    for sid in ("xlmr-cls", "xlmr-mean"):
        assert "position_embedding_type" not in _json(build(sid) / "config.json"), sid
    assert _json(build("xlmr-mean-pet") / "config.json")["position_embedding_type"] == "absolute"
    for sid in ("qwen2-last", "qwen3-last", "mistral-last", "llama-last"):
        model = _st(build(sid))
        assert model.max_seq_length == 512, sid  # the tokenizer's limit, below the 1024 positions
        ids = model.tokenizer("some text")["input_ids"]
        assert ids[-1] == model.tokenizer.eos_token_id, sid  # EOS appended: last-token pooling reads it
    gemma = _st(build("gemma3-bidirectional-2dense"))
    assert gemma.max_seq_length == 1024 and _json(build("gemma3-bidirectional-2dense") / "config.json")[
        "use_bidirectional_attention"] is True
    assert _json(build("qwen2-is-causal-false") / "config.json")["is_causal"] is False
    assert _st(build("bert-truncate-dim")).truncate_dim == 16


def test_what_cross_encoder_reads_from_the_cross_encoder_folders():
    import torch
    from sentence_transformers import CrossEncoder

    def load(sid):
        return CrossEncoder(str(build(sid)), device="cpu")

    assert isinstance(load("ce-bert-1label").activation_fn, torch.nn.Sigmoid)
    assert load("ce-bert-maxlen32").max_length == 32
    two = load("ce-bert-2label")
    assert two.num_labels == 2 and isinstance(two.activation_fn, torch.nn.Identity)
    assert isinstance(load("ce-bert-2label-softmax").activation_fn, torch.nn.Softmax)
    st6 = build("ce-bert-identity-st6")
    assert _json(st6 / "config_sentence_transformers.json")["activation_fn"] == "torch.nn.modules.linear.Identity"
    assert "sentence_transformers" not in _json(st6 / "config.json")
    assert isinstance(load("ce-bert-identity-st6").activation_fn, torch.nn.Identity)
    st53 = build("ce-bert-identity-st53")
    assert not (st53 / "modules.json").exists()
    assert _json(st53 / "config.json")["sentence_transformers"]["activation_fn"] == "torch.nn.modules.linear.Identity"
    assert isinstance(load("ce-bert-identity-st53").activation_fn, torch.nn.Identity)
    regression = load("ce-bert-regression")
    assert _json(build("ce-bert-regression") / "config.json")["problem_type"] == "regression"
    assert isinstance(regression.activation_fn, torch.nn.Sigmoid)  # sentence-transformers ignores problem_type


# --- fast tier: the ids that reach the model ----------------------------------------------------------------
#: One setup per tokenizer and context-length situation (the engine tier checks the ids of every setup).
TOKEN_CHECKED = ("bert-mean", "bert-st6-maxlen16", "bert-st53-maxlen16", "bert-st53-lowercase", "bert-no-st-files",
                 "roberta-mean", "xlmr-cls", "modernbert-mean", "qwen2-last", "qwen3-last", "mistral-last",
                 "llama-last", "gemma3-bidirectional-2dense")


@pytest.mark.parametrize("sid", TOKEN_CHECKED)
def test_the_model_gets_the_token_ids_sentence_transformers_gives_it(sid):
    """Our wrapper, with a spy at the backend seam and no engine, hands the model the ids sentence-transformers
    gives its model for the same texts: truncation at the reference's context length, lower-casing, spaces
    kept, the special tokens of the tokenizer."""
    from mteb_vllm import VllmEncoderWrapper

    path = build(sid)
    texts = list(zoo_texts())
    expected = reference_token_ids(_st(path), texts)
    with no_engine_start(), spy_backend_registered() as spy:
        wrapper = VllmEncoderWrapper(str(path), dtype="float32", backend=spy)
        try:
            wrapper.embed_texts(texts)
            ours = SpyBackend.last.token_ids()
        finally:
            wrapper.close()
    assert ours == expected, describe_difference(ours, expected)


@pytest.mark.parametrize("setup", REFUSED, ids=_ids(REFUSED))
def test_refused_before_any_engine_starts(setup):
    from mteb_vllm import VllmCrossEncoderWrapper, VllmEncoderWrapper

    wrapper_cls = VllmEncoderWrapper if setup.kind == "encoder" else VllmCrossEncoderWrapper
    expect_refused(Outcome(setup.id, SECTION),
                   lambda: wrapper_cls(str(build(setup)), dtype="float32", lazy_start=False).close(), setup.reason)


# --- engine tier ---------------------------------------------------------------------------------------------
@pytest.mark.engine
@pytest.mark.parametrize("setup", EXACT_ENCODERS, ids=_ids(EXACT_ENCODERS))
def test_encoder_setup_equals_sentence_transformers(setup, session_engine):
    """Vectors, token ids and the STS main score against sentence-transformers on the same folder (and, for
    setups that save prompts, the query vectors and the retrieval score through mteb's wrapper)."""
    from mteb_vllm import VllmEncoderWrapper

    path = build(setup)
    texts = list(zoo_texts())
    reference = _st(path)
    with captured_inputs(hf_model_of(reference)) as ref_rows:
        ref_vectors = reference.encode(texts, batch_size=32)
    ref_sts = main_score(_reference_wrapper(reference), sts_task())
    outcome = Outcome(setup.id, SECTION)
    with outcome.recording():
        with VllmEncoderWrapper(str(path), dtype="float32") as ours:
            with recorded_pool_inputs(ours.backend) as sent:
                vectors = ours.embed_texts(texts)
            sts = main_score(ours, sts_task())
            figures: dict = {"sts_delta": abs(sts - ref_sts)}
            if setup.prompted:
                ref_wrapper = _reference_wrapper(reference)
                figures.update(_prefixed(row_agreement(_encode_queries(ours, _query_texts()),
                                                       _encode_queries(ref_wrapper, _query_texts())), "query_"))
                figures["retrieval_delta"] = abs(main_score(ours, retrieval_task()) - main_score(ref_wrapper,
                                                                                                  retrieval_task()))
        failures = []
        ids_sent = {tuple(item.token_ids) for _, item in sent}
        if ids_sent != set(ref_rows):
            failures.append("token ids differ: " + describe_difference(ids_sent, set(ref_rows), limit=1))
        if vectors.shape != ref_vectors.shape:
            failures.append(f"shape {vectors.shape} vs the reference's {ref_vectors.shape}")
        else:
            figures.update(row_agreement(vectors, ref_vectors))
        failures += _encoder_failures(figures)
        outcome.set(result="differs" if failures else "exact", reason="; ".join(failures) or None, **figures)
    assert not failures, f"{setup.id}: " + "; ".join(failures)


def _prefixed(figures, prefix=""):
    return {prefix + k: v for k, v in figures.items()}


def _encoder_failures(figures):
    failures = []
    for key, value in figures.items():
        limit = (MAX_ONE_MINUS_COS if key.endswith("one_minus_cos") else MAX_NORM_ERROR if key.endswith("norm_error")
                 else MAX_MAIN_SCORE_DELTA)
        if not value <= limit:
            failures.append(f"{key} {value:.3g} > {limit:g}")
    return failures


def _pairs():
    """Real query/passage pairs: each demo query with its relevant passage and two others, plus pairs whose
    passage (or query) is longer than every cross-encoder context in the zoo."""
    from model_zoo import _demo_rows

    queries = _demo_rows("queries.jsonl")
    corpus = {d["id"]: d["text"] for d in _demo_rows("corpus.jsonl")}
    ids = sorted(corpus)
    q, d = [], []
    for i, query in enumerate(queries):
        for doc in [next(iter(query["relevant"]))] + [ids[(i * 7 + k) % len(ids)] for k in (3, 11)]:
            q.append(query["text"])
            d.append(corpus[doc])
    long_text = " ".join(corpus[k] for k in ids)
    for query in queries[:3]:
        q.append(query["text"])
        d.append(long_text)
    q.append(long_text)
    d.append(corpus[ids[0]])
    return q, d


@pytest.mark.engine
@pytest.mark.parametrize("setup", EXACT_CROSS_ENCODERS, ids=_ids(EXACT_CROSS_ENCODERS))
def test_cross_encoder_setup_equals_reference(setup, session_engine):
    from mteb_vllm import VllmCrossEncoderWrapper

    path = build(setup)
    queries, docs = _pairs()
    kwargs = {}
    if setup.reference == "mteb-qwen3-reranker":
        from mteb_vllm.templates import QWEN3_RERANKER

        queries, docs = queries[:-4], docs[:-4]  # the template's context (8192) is far beyond the zoo's texts
        ref = _qwen3_reranker_reference(path, queries, docs)
        kwargs["template"] = QWEN3_RERANKER
    else:
        ref = _cross_encoder_reference(path, queries, docs)
    outcome = Outcome(setup.id, SECTION)
    with outcome.recording():
        with VllmCrossEncoderWrapper(str(path), dtype="float32", **kwargs) as ours:
            scores = np.asarray(ours.score_pairs(queries, docs), dtype=np.float64)
        if ref.ndim == 2 and scores.ndim == 1:  # a two-label head: P(relevant), from raw logits or a saved Softmax
            import torch

            ref = ref if np.allclose(ref.sum(axis=1), 1.0) else torch.softmax(torch.from_numpy(ref), dim=1).numpy()
            ref = ref[:, -1]
        if scores.shape != ref.shape:
            outcome.set(result="differs", reason=f"shape {scores.shape} vs {ref.shape}")
            pytest.fail(f"{setup.id}: scores of shape {scores.shape}, the reference's {ref.shape}")
        delta = float(np.max(np.abs(scores - ref)))
        ok = delta <= MAX_SCORE_DELTA
        outcome.set(result="exact" if ok else "differs", max_score_delta=delta,
                    reason=None if ok else f"max |score delta| {delta:.3g} > {MAX_SCORE_DELTA:g}")
    assert ok, f"{setup.id}: max |score delta| {delta:.3g} (first rows: ours {scores[:3]}, reference {ref[:3]})"


def _cross_encoder_reference(path, queries, docs):
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(path), device="cpu", model_kwargs={"dtype": torch.float32})
    return np.asarray(model.predict(list(zip(queries, docs)), batch_size=16, show_progress_bar=False),
                      dtype=np.float64)


def _qwen3_reranker_reference(path, queries, docs):
    import torch
    from mteb.mocks.mock_tasks.reranking import MockRerankingTask
    from mteb.models.model_implementations.qwen3_reranker import Qwen3RerankerWrapper

    reference = Qwen3RerankerWrapper(str(path), device="cpu", dtype=torch.float32)
    return np.asarray(reference.predict(text_loader(queries), text_loader(docs),
                                        task_metadata=MockRerankingTask().metadata, hf_split="test",
                                        hf_subset="default", batch_size=4, show_progress_bar=False), dtype=np.float64)


# --- the hand-written 5.3 layout against the real release -------------------------------------------------------
ST53_SAVE = '''
import sys, torch
from sentence_transformers import SentenceTransformer, CrossEncoder, __version__, models
assert __version__ == "5.3.0", __version__
hf, ce_hf, out, ce_out = sys.argv[1:5]
modules = [models.Transformer(hf, max_seq_length=16, do_lower_case=False), models.Pooling(64, pooling_mode="mean"),
           models.Dense(64, 32, activation_function=torch.nn.GELU()), models.Normalize()]
SentenceTransformer(modules=modules, device="cpu").save(out)
CrossEncoder(ce_hf, device="cpu", activation_fn=torch.nn.Identity()).save(ce_out)
'''


def _st53_package():
    import os
    from pathlib import Path

    path = Path(os.environ.get("MTEB_VLLM_ST53_PATH", "/tmp/survey-st/st5.3.0"))
    return path if (path / "sentence_transformers" / "__init__.py").exists() else None


@pytest.mark.slow
@pytest.mark.skipif(_st53_package() is None, reason="needs sentence-transformers 5.3.0 unpacked (MTEB_VLLM_ST53_PATH; "
                    "`pip download sentence-transformers==5.3.0 --no-deps` and unzip the wheel)")
def test_the_st53_layout_is_what_sentence_transformers_5_3_writes(tmp_path):
    """as_st53_layout (used by the bert-st53-* setups and the registry stand-ins) against a real 5.3.0 save of the
    same modules, written in a subprocess that imports the 5.3.0 package."""
    import os
    import subprocess
    import sys

    from model_zoo import _hf_then_st, _pool, as_st53_layout, bert_hf

    hf, ce_hf = bert_hf(tmp_path / "hf", seed=1), bert_hf(tmp_path / "ce_hf", seed=2, head="classifier")
    real, real_ce = tmp_path / "real", tmp_path / "real_ce"
    env = {**os.environ, "PYTHONPATH": f"{_st53_package()}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-c", ST53_SAVE, str(hf), str(ce_hf), str(real), str(real_ce)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = tmp_path / "ours"
    ours.mkdir()
    _hf_then_st(lambda d: bert_hf(d, seed=1), _pool("mean", dense=((32, _act("GELU")(), True),)))(ours)
    as_st53_layout(ours, max_seq_length=16, do_lower_case=False)
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "2_Dense/config.json"):
        assert _json(ours / name) == _json(real / name), name
    assert sorted(p.name for p in (ours / "3_Normalize").iterdir()) == sorted(
        p.name for p in (real / "3_Normalize").iterdir()) == []
    drop = {"__version__"}
    assert {k: v for k, v in _json(ours / "config_sentence_transformers.json").items() if k not in drop} == {
        k: v for k, v in _json(real / "config_sentence_transformers.json").items() if k not in drop}
    assert _json(ours / "config_sentence_transformers.json")["__version__"]["sentence_transformers"] == "5.3.0"
    assert _json(ours / "tokenizer_config.json")["model_max_length"] == _json(real / "tokenizer_config.json")[
        "model_max_length"] == 16
    # a cross-encoder: a plain Hugging Face folder, the activation in config.json
    assert not (real_ce / "modules.json").exists()
    from model_zoo import _cross_encoder_st53

    ours_ce = tmp_path / "ours_ce"
    ours_ce.mkdir()
    _cross_encoder_st53(lambda d: bert_hf(d, seed=2, head="classifier"), "torch.nn.modules.linear.Identity")(ours_ce)
    assert _json(ours_ce / "config.json")["sentence_transformers"] == _json(real_ce / "config.json")[
        "sentence_transformers"]
