"""The cross-encoder's own logic on the FakeBackend: pair checks, dedup, document-side truncation, templates,
score heads and the NaN policy. The real engine against sentence-transformers and mteb's Qwen3 reference:
test_cross_encoder_engine.py."""

from __future__ import annotations

import numpy as np
import pytest
from mteb.mocks.mock_tasks.reranking import MockRerankingTask

from mteb_vllm import VllmCrossEncoderWrapper
from mteb_vllm.backends import BACKENDS, register_backend
from mteb_vllm.errors import EngineArgumentError, MtebVllmError
from mteb_vllm.templates import QWEN3_RERANKER, ScoreTemplate
from mteb_vllm.testing import FakeBackend, byte_tokenizer

RERANKING = MockRerankingTask().metadata


def _reranker(max_model_len=64, **kwargs):
    backend = FakeBackend(max_model_len=max_model_len)
    return VllmCrossEncoderWrapper("fake/reranker", backend=backend, max_model_len=max_model_len, **kwargs), backend


def test_scores_follow_the_pairs_and_duplicates_are_scored_once():
    reranker, backend = _reranker()
    queries = ["cats", "cats", "dogs", "cats"]
    docs = ["cats purr", "stock prices", "dogs bark", "cats purr"]
    scores = reranker.score_pairs(queries, docs)
    assert scores.dtype == np.float32 and scores.shape == (4,)
    assert backend.inputs_seen == 3
    assert scores[0] == scores[3] and scores[0] > scores[1]  # the fake scores word overlap of the two segments


def test_long_pairs_are_cut_longest_first_and_every_cut_is_counted():
    """sentence-transformers' CrossEncoder tokenizes (truncation "longest_first": tokens come off the longer side
    first); the wrapper counts every cut and the backend never sees more than the context length."""
    reranker, backend = _reranker(max_model_len=40)
    short_query, long_query = "which river", "q" * 60
    seen = []
    real_pool = backend.pool
    backend.pool = lambda inputs, task, **kw: (seen.extend(inputs), real_pool(inputs, task, **kw))[1]
    scores = reranker.score_pairs([short_query, short_query, long_query], ["short doc", "water " * 100, "d" * 10])
    assert np.isfinite(scores).all() and reranker.truncated == 2
    tok = byte_tokenizer()
    doc_cut = next(i for i in seen if "water" in tok.decode(i.token_ids))
    query_cut = next(i for i in seen if "qqq" in tok.decode(i.token_ids))
    assert [len(doc_cut), len(query_cut)] == [40, 40]
    assert tok.decode(doc_cut.token_ids[: doc_cut.second_segment_start]).count("which river") == 1  # query kept
    assert tok.decode(query_cut.token_ids[query_cut.second_segment_start:]).count("d") == 10  # document kept
    assert doc_cut.pair == ("which river", ("water " * 100)[:26])  # what a server taking text must be sent


def test_lengths_must_match_and_empty_is_empty():
    reranker, _ = _reranker()
    with pytest.raises(MtebVllmError, match="2 queries but 1 documents"):
        reranker.score_pairs(["a", "b"], ["c"])
    assert reranker.score_pairs([], []).shape == (0,)


def test_templates_carry_the_instruction_and_reach_the_backend():
    reranker, backend = _reranker(max_model_len=512, template=QWEN3_RERANKER)
    assert reranker.config.score_template is QWEN3_RERANKER
    a = reranker.score_pairs(["q"], ["d"], ["Find code"])
    b = reranker.score_pairs(["q"], ["d"], ["Find passages about rivers"])
    assert a[0] != b[0]
    with pytest.raises(EngineArgumentError, match="instruction= needs an LLM reranker template"):
        VllmCrossEncoderWrapper("fake/reranker", backend=FakeBackend(), instruction="Find it")


def test_the_template_head_is_the_backends_business():
    args = VllmCrossEncoderWrapper("fake/reranker", backend="fake", template=QWEN3_RERANKER).config.to_engine_args()
    assert args["hf_overrides"] == {"classifier_from_token": ["no", "yes"], "method": "from_2_way_softmax"}
    explicit = VllmCrossEncoderWrapper("fake/reranker", backend="fake", template=QWEN3_RERANKER,
                                       hf_overrides={"method": "x"}).config.to_engine_args()
    assert explicit["hf_overrides"]["method"] == "x"  # the user's override wins
    with pytest.raises(MtebVllmError, match=r"must contain \{query\} and \{document\}"):
        ScoreTemplate(pair_format="{query} only")


def test_a_two_label_head_scores_with_p_relevant():
    register_backend("fake-2label", lambda config, **o: FakeBackend(config, num_labels=2))
    try:
        reranker = VllmCrossEncoderWrapper("fake/reranker", backend="fake-2label")
        scores = reranker.score_pairs(["cats", "cats"], ["cats purr", "stock prices"])
        assert 0 <= scores.min() and scores.max() <= 1 and scores[0] > scores[1]
    finally:
        BACKENDS.pop("fake-2label")


def test_nan_scores_in_auto_half_precision_are_rerun_in_float32():
    register_backend("fake-overflow", lambda config, **o: FakeBackend(config, auto_dtype="bfloat16",
                                                                       nonfinite_dtypes=("bfloat16",)))
    try:
        reranker = VllmCrossEncoderWrapper("fake/reranker", backend="fake-overflow")
        scores = reranker.score_pairs(["q", "q"], ["a", "b"])
        assert np.isfinite(scores).all() and reranker.dtype == "float32"
    finally:
        BACKENDS.pop("fake-overflow")



def test_a_rerankings_later_overflow_stops_the_task_instead_of_mixing_precisions():
    """predict() names its task: after a call of the task returned bfloat16 scores, an overflow in a later call
    of the same task stops it (PrecisionChangedError); later tasks run in float32."""
    from mteb_vllm.errors import PrecisionChangedError

    register_backend("fake-overflow-on", lambda config, **o: FakeBackend(config, auto_dtype="bfloat16",
                                                                         nonfinite_texts=("overflows",)))
    try:
        reranker = VllmCrossEncoderWrapper("fake/reranker", backend="fake-overflow-on")

        def predict(doc, meta=RERANKING):
            return reranker.predict([{"text": ["q"]}], [{"text": [doc]}], task_metadata=meta, hf_split="test",
                                    hf_subset="default")

        predict("fine")
        with pytest.raises(PrecisionChangedError, match="MockRerankingTask"):
            predict("this overflows")
        assert reranker.dtype == "float32"
        other = RERANKING.model_copy(update={"name": "OtherReranking"})
        assert np.isfinite(predict("this overflows", other)).all()
    finally:
        BACKENDS.pop("fake-overflow-on")


def test_an_empty_instruction_stays_empty_and_only_a_missing_one_takes_the_default(monkeypatch):
    """mteb's Qwen3RerankerWrapper swaps in its default instruction only for None, not for ""."""
    from mteb_vllm.templates import ScoreTemplate as Template

    reranker, _ = _reranker(max_model_len=512, template=QWEN3_RERANKER)
    rendered: list[str] = []
    original = Template.render

    def spy(self, query, document, instruction=None):
        out = original(self, query, document, instruction)
        rendered.append(out[0])
        return out

    monkeypatch.setattr(Template, "render", spy)
    reranker.score_pairs(["q", "q"], ["d", "e"], ["", None])
    default = f"<Instruct>: {QWEN3_RERANKER.default_instruction}\n"
    assert sum("<Instruct>: \n" in text for text in rendered) == 1
    assert sum(default in text for text in rendered) == 1
