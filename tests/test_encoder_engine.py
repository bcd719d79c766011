"""The encoder on a real vLLM engine and real weights (packaged all-MiniLM-L6-v2): parity with the reference.

The wrapper's logic (dedup, truncation counts, prompts, NaN policy, input checks) is tested on the FakeBackend
in test_encoder.py; here only what needs the engine."""

import mteb
import numpy as np
import pytest
from mteb.mocks import mock_tasks

from mteb_vllm import VllmEncoderWrapper

pytestmark = pytest.mark.engine


def _texts(n=300):
    rng = np.random.default_rng(0)
    words = "the a cat dog model vector search engine query passage river mountain music code data".split()
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 200)))) for _ in range(n)]


@pytest.fixture(scope="module")
def minilm_reference(minilm_path):
    """mteb's reference for the packaged MiniLM: its registry loader (sentence-transformers, float32)."""
    from mteb_vllm.parity import reference_model
    from mteb_vllm.resolve import registry_meta

    return reference_model(minilm_path, registry_meta("sentence-transformers/all-MiniLM-L6-v2"), cross_encoder=False)


def _min_cosine(ours, ref):
    return float(((ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)).min())


def test_parity_with_sentence_transformers(minilm_encoder, minilm_reference):
    texts = _texts()
    ours = minilm_encoder.embed_texts(texts)
    ref = minilm_reference.model.encode(texts, batch_size=32)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert _min_cosine(ours, ref) >= 0.99999


def test_bad_inputs_embed_as_sentence_transformers(minilm_encoder, minilm_reference):
    texts = ["", "word " * 20000, "ctrl\x00\x07\x1b[0m chars", "plain"]
    before = minilm_encoder.stats.truncated
    out = minilm_encoder.embed_texts(texts)
    assert out.shape == (4, 384) and minilm_encoder.stats.truncated - before == 1
    assert _min_cosine(out, minilm_reference.model.encode(texts)) >= 0.99999


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
def test_mteb_text_mock_tasks_score_as_the_reference(minilm_encoder, minilm_reference, task_cls):
    """Every kind of text task mteb has (each calls encode its own way: prompt types, pairs, corpora) gives
    the reference's main score."""
    ours, ref = (mteb.evaluate(model, task_cls(), cache=None, show_progress_bar=False).task_results[0].get_score()
                 for model in (minilm_encoder, minilm_reference))
    assert ours == pytest.approx(ref, abs=1e-4)


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


@pytest.fixture(scope="module")
def qwen3_encoder(qwen3_embedding_path):
    # block_size: a user's engine argument beats the CPU default (checked below)
    wrapper = VllmEncoderWrapper(qwen3_embedding_path, dtype="float32", max_model_len=512, block_size=64)
    yield wrapper
    wrapper.close()


def test_qwen3_decoder_last_token_pooling_equals_sentence_transformers(qwen3_encoder, qwen3_embedding_path):
    """A decoder checkpoint without sentence-transformers files: sentence-transformers pools its last token and does
    not normalise (vLLM's default would); ours is the same."""
    import torch
    from sentence_transformers import SentenceTransformer

    texts = _texts(40) + ["short", ""]
    ours = qwen3_encoder.embed_texts(texts)
    ref = SentenceTransformer(qwen3_embedding_path, device="cpu", model_kwargs={"dtype": torch.float32},
                              processor_kwargs={"model_max_length": 512}).encode(texts)
    assert ours.shape == ref.shape == (len(texts), 128)
    assert abs(np.linalg.norm(ref[0]) - 1) > 0.1  # the premise: not normalised
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-5)


def test_user_engine_argument_beats_cpu_default(qwen3_encoder):
    from mteb_vllm.cpu_defaults import CPU_BLOCK_SIZE

    assert CPU_BLOCK_SIZE != 64
    assert qwen3_encoder.engine.llm.llm_engine.vllm_config.cache_config.block_size == 64


def test_nan_output_raises_with_model_and_dtype(minilm_encoder):
    """The real engine's output with one row poisoned, as an fp16 overflow would leave it."""
    from backend_proxy import Overflowing

    from mteb_vllm.errors import NonFiniteOutputError

    wrapped = VllmEncoderWrapper(minilm_encoder.model_path, backend=Overflowing(minilm_encoder.backend, "float16", row=1))
    with pytest.raises(NonFiniteOutputError, match=r"1 embeddings contain NaN or Inf with dtype float16.*dtype='float32'"):
        wrapped.embed_texts(["fine", "overflows"])


def test_non_text_task_is_refused(minilm_encoder):
    from mteb.mocks.mock_tasks.sts import MockSTSTask

    from mteb_vllm.errors import UnsupportedTaskError

    with pytest.raises(UnsupportedTaskError, match="text only"):
        minilm_encoder.encode([{"image": [object()]}], task_metadata=MockSTSTask().metadata, hf_split="test",
                              hf_subset="default")


def test_texts_longer_than_the_context_score_as_sentence_transformers(minilm_encoder, minilm_reference):
    """MiniLM reads 256 tokens; longer texts are cut exactly where sentence-transformers cuts them."""
    rng = np.random.default_rng(7)
    words = "the a cat dog model vector search engine query passage river mountain music code data".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(300, 2000)))) for _ in range(20)]
    before = minilm_encoder.stats.truncated
    ours = minilm_encoder.embed_texts(texts)
    assert minilm_encoder.stats.truncated - before == 20
    assert _min_cosine(ours, minilm_reference.model.encode(texts, batch_size=8)) >= 0.99999
