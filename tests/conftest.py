"""One real vLLM engine per model for the whole session (each start costs ~30 s on CPU)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MTEB_VLLM_NO_PROGRESS", "1")


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
