"""One real vLLM engine per model for the whole session (each start costs ~30 s on CPU)."""

import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MTEB_VLLM_NO_PROGRESS", "1")
# The CLI caches embeddings by default in the user cache folder; tests (and the CLI runs they start) use their
# own, so a test run neither reads a user's entries nor leaves its own behind.
os.environ.setdefault("MTEB_VLLM_CACHE", tempfile.mkdtemp(prefix="mteb-vllm-test-cache-"))


@pytest.fixture(scope="session")
def minilm_path():
    from mteb_vllm import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def minilm_encoder(minilm_path):
    from mteb_vllm import VllmEncoderWrapper

    wrapper = VllmEncoderWrapper(minilm_path, model_name="sentence-transformers/all-MiniLM-L6-v2", dtype="float32")
    yield wrapper
    wrapper.close()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def qwen3_embedding_path(tiny_dir, minilm_path):
    from tiny_models import qwen3_embedding_model

    return str(qwen3_embedding_model(tiny_dir / "qwen3-embedding", minilm_path))


@pytest.fixture(scope="session")
def bert_cross_encoder_path(tiny_dir, minilm_path):
    from tiny_models import bert_cross_encoder

    return str(bert_cross_encoder(tiny_dir / "bert-cross-encoder", minilm_path))


@pytest.fixture(scope="session")
def bert_two_label_path(tiny_dir, minilm_path):
    from tiny_models import bert_cross_encoder

    return str(bert_cross_encoder(tiny_dir / "bert-two-label", minilm_path, seed=3, num_labels=2))


@pytest.fixture(scope="session")
def qwen3_reranker_path(tiny_dir, minilm_path):
    from tiny_models import qwen3_reranker_model

    return str(qwen3_reranker_model(tiny_dir / "qwen3-reranker", minilm_path))


@pytest.fixture(scope="session")
def bert_reranker(bert_cross_encoder_path):
    from mteb_vllm import VllmCrossEncoderWrapper

    wrapper = VllmCrossEncoderWrapper(bert_cross_encoder_path, dtype="float32")
    yield wrapper
    wrapper.close()


@pytest.fixture(scope="session")
def qwen3_reranker(qwen3_reranker_path):
    from mteb_vllm import VllmCrossEncoderWrapper
    from mteb_vllm.templates import QWEN3_RERANKER

    wrapper = VllmCrossEncoderWrapper(qwen3_reranker_path, template=QWEN3_RERANKER, dtype="float32",
                                      max_model_len=512)
    yield wrapper
    wrapper.close()
