"""Rerankers on the real engine: a tiny BERT cross-encoder and a tiny Qwen3 yes/no reranker."""

import mteb
import numpy as np
import pytest

from mteb_vllm import VllmCrossEncoderWrapper
from mteb_vllm.errors import ModelNotFoundError, MtebVllmError
from mteb_vllm.templates import QWEN3_RERANKER, ScoreTemplate, registry_template

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def bert_reference(bert_cross_encoder_path):
    """mteb's reference for a cross-encoder without a registry entry: sentence-transformers' CrossEncoder."""
    from mteb_vllm.parity import reference_model

    return reference_model(bert_cross_encoder_path, None, cross_encoder=True)


@pytest.fixture(scope="module")
def qwen3_reference(qwen3_reranker_path):
    """mteb's own Qwen3-Reranker implementation: a plain transformers forward pass, the template, yes/no logits."""
    from mteb.models.model_implementations.qwen3_reranker import Qwen3RerankerWrapper

    reference = Qwen3RerankerWrapper(qwen3_reranker_path, device="cpu")
    reference.mteb_model_meta = mteb.get_model_meta("Qwen/Qwen3-Reranker-0.6B")  # as mteb.get_model attaches it
    return reference


def _pairs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    words = "the a cat dog model vector search engine query passage river mountain music code data yes no".split()
    queries = [" ".join(rng.choice(words, size=int(rng.integers(2, 12)))) for _ in range(n // 10)]
    docs = [" ".join(rng.choice(words, size=int(rng.integers(5, 150)))) for _ in range(n)]
    return [queries[i // 10] for i in range(n)], docs


def test_bert_cross_encoder_equals_sentence_transformers(bert_reranker, bert_reference):
    queries, docs = _pairs()
    ours = bert_reranker.score_pairs(queries, docs)
    ref = bert_reference.model.predict(list(zip(queries, docs)), batch_size=32)
    assert ours.dtype == np.float32 and ours.shape == (len(docs),)
    assert np.abs(ours - ref).max() <= 1e-4
    assert ref.std() > 0.01  # the scores actually differ, so the ranking check below means something
    for start in range(0, len(docs), 10):  # same ranking of each query's ten documents
        assert list(np.argsort(-ours[start:start + 10])) == list(np.argsort(-ref[start:start + 10]))


def _loader(texts, instructions=None):
    from datasets import Dataset
    from torch.utils.data import DataLoader

    columns = {"text": texts}
    if instructions is not None:
        columns["instruction"] = instructions
    return DataLoader(Dataset.from_dict(columns), batch_size=16)


def test_qwen3_reranker_equals_mteb_reference(qwen3_reranker, qwen3_reference):
    """mteb's Qwen3RerankerWrapper is a plain transformers forward pass with the template and yes/no logits."""
    from mteb.mocks.mock_tasks.reranking import MockRerankingTask

    queries, docs = _pairs(60, seed=1)
    instructions = ["Find passages about animals" if i % 3 == 0 else None for i in range(len(queries))]
    # mteb reads instructions only when the dataset has the column; None rows take the default instruction
    with_instr = [i if i is not None else QWEN3_RERANKER.default_instruction for i in instructions]
    meta = MockRerankingTask().metadata
    ref = qwen3_reference.predict(_loader(queries, with_instr), _loader(docs), task_metadata=meta, hf_split="test",
                            hf_subset="default", batch_size=1, show_progress_bar=False)
    ours = qwen3_reranker.predict(_loader(queries, with_instr), _loader(docs), task_metadata=meta,
                                  hf_split="test", hf_subset="default", show_progress_bar=False)
    assert ref.std() > 0.01
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    # the instruction reaches the model: the same pair scores differently under another instruction
    plain = qwen3_reranker.score_pairs(queries[:1], docs[:1], ["Find code"])
    other = qwen3_reranker.score_pairs(queries[:1], docs[:1], ["Find passages about rivers and mountains"])
    assert abs(float(plain[0]) - float(other[0])) > 1e-6


def test_qwen3_template_is_mtebs(qwen3_reference):
    reference = qwen3_reference
    assert (QWEN3_RERANKER.prefix, QWEN3_RERANKER.suffix) == (reference.prefix, reference.suffix)
    assert QWEN3_RERANKER.render("q", "d")[0] == reference.format_instruction(None, "q", "d")
    assert QWEN3_RERANKER.render("q", "d", "i")[0] == reference.format_instruction("i", "q", "d")
    assert registry_template(mteb.get_model_meta("Qwen/Qwen3-Reranker-0.6B")) is QWEN3_RERANKER
    assert registry_template(mteb.get_model_meta("cross-encoder/ms-marco-MiniLM-L6-v2")) is None


def test_template_truncates_the_document_never_the_query(qwen3_reranker):
    from mteb_vllm.tokenizing import tokenize_templated

    tok = qwen3_reranker.backend.tokenizer
    query = "which river flows through the mountain valley"
    tokens, report = tokenize_templated(tok, QWEN3_RERANKER, [query], ["water " * 5000], ["Find it"], max_len=128)
    ids = tokens[0].token_ids
    assert len(ids) == 128 and report.truncated == 1
    assert tok.decode(ids).count("water") > 10
    query_ids = tok.encode(query, add_special_tokens=False)
    assert any(ids[i:i + len(query_ids)] == query_ids for i in range(len(ids)))
    suffix = tok.encode(QWEN3_RERANKER.suffix, add_special_tokens=False)
    assert ids[-len(suffix):] == suffix


def test_bad_inputs_score_as_the_reference(bert_reranker, qwen3_reranker, bert_reference):
    queries = ["a query", "a query", "ctrl \x00\x1b[0m"]
    docs = ["", "long " * 25000, "doc"]
    for reranker in (bert_reranker, qwen3_reranker):
        before = reranker.truncated
        scores = reranker.score_pairs(queries, docs)
        assert scores.shape == (3,) and np.isfinite(scores).all()
        assert reranker.truncated - before == 1
        if reranker is bert_reranker:
            np.testing.assert_allclose(scores, bert_reference.model.predict(list(zip(queries, docs))), atol=1e-4)
    with pytest.raises(MtebVllmError, match="2 queries but 1 documents"):
        bert_reranker.score_pairs(["a", "b"], ["c"])


def test_unknown_path_and_bad_template():
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        VllmCrossEncoderWrapper("/no/such/reranker")
    with pytest.raises(MtebVllmError, match=r"must contain \{query\} and \{document\}"):
        ScoreTemplate(pair_format="{query} only")


def test_mock_reranking_tasks_score_as_the_reference(bert_reranker, qwen3_reranker, bert_reference,
                                                     qwen3_reference):
    from mteb.mocks.mock_tasks.reranking import MockInstructionReranking, MockRerankingTask

    for ours, reference in ((bert_reranker, bert_reference), (qwen3_reranker, qwen3_reference)):
        for task_cls in (MockRerankingTask, MockInstructionReranking):
            mine, ref = (mteb.evaluate(model, task_cls(), cache=None, show_progress_bar=False).task_results[0]
                         .get_score() for model in (ours, reference))
            assert mine == pytest.approx(ref, abs=1e-4), (ours.model_path, task_cls.__name__)


def test_mock_retrieval_converted_to_reranking(bert_reranker, bert_reference, minilm_encoder, tmp_path):
    """Reranking the top 2 of our encoder's retrieval run scores as the reference reranker does on the same lists."""
    from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask

    mteb.evaluate(minilm_encoder, MockRetrievalTask(), cache=None, prediction_folder=tmp_path,
                  show_progress_bar=False)
    scores = []
    for model in (bert_reranker, bert_reference):
        task = MockRetrievalTask()
        task.convert_to_reranking(tmp_path, top_k=2)
        scores.append(mteb.evaluate(model, task, cache=None, show_progress_bar=False).task_results[0].get_score())
    assert scores[0] == pytest.approx(scores[1], abs=1e-4)


def test_nan_scores_raise_with_model_and_dtype(bert_reranker):
    """The real engine's scores with one poisoned, as a bf16/fp16 overflow would leave them."""
    from backend_proxy import Overflowing

    from mteb_vllm.errors import NonFiniteOutputError

    wrapped = VllmCrossEncoderWrapper(bert_reranker.model_path, backend=Overflowing(bert_reranker.backend, "bfloat16", row=0, value=np.nan))
    with pytest.raises(NonFiniteOutputError, match=r"1 scores contain NaN or Inf with dtype bfloat16.*'float32'"):
        wrapped.score_pairs(["q", "q"], ["a", "b"])


def test_instruction_needs_a_template_and_lengths_must_match(bert_reranker, bert_cross_encoder_path):
    from mteb_vllm.errors import EngineArgumentError

    with pytest.raises(EngineArgumentError, match="instruction= needs an LLM reranker template"):
        VllmCrossEncoderWrapper(bert_cross_encoder_path, instruction="Find it")
    with pytest.raises(MtebVllmError, match="got 1 instructions for 2 queries"):
        bert_reranker.score_pairs(["a", "b"], ["c", "d"], ["only one"])


def _half_budget_pairs(tokenizer, n=12, seed=5):
    """Queries that take about half of the 512-token budget, documents far longer than the rest."""
    rng = np.random.default_rng(seed)
    words = "river mountain music code data search engine vector model passage query cat dog".split()
    queries = [" ".join(rng.choice(words, size=int(rng.integers(230, 280)))) for _ in range(n)]
    docs = [" ".join(rng.choice(words, size=int(rng.integers(400, 900)))) for _ in range(n)]
    lengths = [len(tokenizer(q)["input_ids"]) for q in queries]
    assert 200 < min(lengths) and max(lengths) < 300  # the premise: each query is about half of 512
    return queries, docs


def test_pairs_whose_query_takes_half_the_budget_score_as_sentence_transformers(bert_reranker, bert_reference):
    """Truncation of long pairs follows the reference: sentence-transformers' CrossEncoder tokenizes pairs with
    truncation=True, which is longest-first (tokens come off the longer side until both fit)."""
    queries, docs = _half_budget_pairs(bert_reranker.backend.tokenizer)
    before = bert_reranker.truncated
    ours = bert_reranker.score_pairs(queries, docs)
    ref = bert_reference.model.predict(list(zip(queries, docs)), batch_size=4)
    assert bert_reranker.truncated - before == len(queries)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_a_two_label_head_scores_p_relevant_as_sentence_transformers(bert_two_label_path):
    """Two-label rerankers ([not relevant, relevant]): our score is the softmax probability of "relevant", the
    reference's logits under the same softmax."""
    from sentence_transformers import CrossEncoder

    queries, docs = _pairs(60, seed=3)
    with VllmCrossEncoderWrapper(bert_two_label_path, dtype="float32") as reranker:
        ours = reranker.score_pairs(queries, docs)
    logits = CrossEncoder(bert_two_label_path, device="cpu").predict(list(zip(queries, docs)), batch_size=16)
    assert logits.shape == (60, 2)
    ref = np.exp(logits[:, 1]) / np.exp(logits).sum(1)
    assert ref.std() > 0.01
    np.testing.assert_allclose(ours, ref, atol=1e-4)
