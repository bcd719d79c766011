"""The encoder on a real vLLM engine and real weights (packaged all-MiniLM-L6-v2)."""

import mteb
import numpy as np
import pytest
from mteb.mocks import mock_tasks

from mteb_vllm import VllmEncoderWrapper, demo_tasks
from mteb_vllm.errors import EngineArgumentError, ModelNotFoundError

pytestmark = pytest.mark.engine


def _texts(n=300):
    rng = np.random.default_rng(0)
    words = "the a cat dog model vector search engine query passage river mountain music code data".split()
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 200)))) for _ in range(n)]


def test_parity_with_sentence_transformers(minilm_encoder, minilm_path):
    from sentence_transformers import SentenceTransformer

    texts = _texts()
    ours = minilm_encoder.embed_texts(texts)
    ref = SentenceTransformer(minilm_path, device="cpu").encode(texts, batch_size=32)
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert cos.min() >= 0.99999


def test_duplicates_encoded_once_and_order_kept(minilm_encoder):
    before = minilm_encoder.stats.unique_texts
    out = minilm_encoder.embed_texts(["b", "a", "b"])
    assert minilm_encoder.stats.unique_texts - before == 2
    np.testing.assert_array_equal(out[0], out[2])
    assert not np.allclose(out[0], out[1])


def test_bad_inputs_do_not_crash(minilm_encoder):
    before = minilm_encoder.stats.truncated
    out = minilm_encoder.embed_texts(["", "word " * 20000, "ctrl\x00\x07\x1b[0m chars", "plain"])
    assert out.shape == (4, 384) and np.isfinite(out).all()
    assert minilm_encoder.stats.truncated - before == 1


def _text_mock_tasks():
    tasks = []
    for name in dir(mock_tasks):
        cls = getattr(mock_tasks, name)
        meta = getattr(cls, "metadata", None)
        if isinstance(cls, type) and meta is not None and list(meta.modalities) == ["text"] \
                and meta.type != "Aggregate" and "Reranking" not in meta.type:
            tasks.append(cls)
    return tasks


@pytest.mark.parametrize("task_cls", _text_mock_tasks(), ids=lambda c: c.__name__)
def test_mteb_evaluate_on_text_mock_tasks(minilm_encoder, task_cls):
    result = mteb.evaluate(minilm_encoder, task_cls(), cache=None, show_progress_bar=False)
    score = result.task_results[0].get_score()
    assert score is not None and np.isfinite(score)


def test_demo_tasks_score_like_reference(minilm_encoder):
    result = mteb.evaluate(minilm_encoder, demo_tasks(), cache=None, show_progress_bar=False)
    scores = {r.task_name: r.get_score() for r in result.task_results}
    assert scores["MtebVllmDemoSTS"] > 0.7 and scores["MtebVllmDemoRetrieval"] > 0.8


def test_static_prompt_dict_reaches_the_model(minilm_encoder):
    wrapped = VllmEncoderWrapper(minilm_encoder.model_path, prompt_dict={"query": "query: ", "document": "passage: "},
                                 backend=minilm_encoder.backend)
    from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask
    from mteb.types import PromptType

    assert wrapped.resolve_prompt(MockRetrievalTask().metadata, PromptType.query).prefix == "query: "
    loader = [{"text": ["hello"]}]
    q = wrapped.encode(loader, task_metadata=MockRetrievalTask().metadata, hf_split="test", hf_subset="default",
                       prompt_type=PromptType.query)
    np.testing.assert_allclose(q[0], minilm_encoder.embed_texts(["query: hello"])[0], atol=1e-6)


def test_unknown_path_fails_fast():
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        VllmEncoderWrapper("/no/such/model/dir")


def test_invalid_argument_fails_before_engine():
    with pytest.raises(EngineArgumentError, match="max_num_seqs"):
        VllmEncoderWrapper("/no/such/model/dir", max_num_seqs=0)
