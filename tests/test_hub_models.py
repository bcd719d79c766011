"""Models given by hub id, read offline from a Hugging Face cache built here: the path most users take.

The cache holds the packaged MiniLM's files under a hub id, at a commit that ``refs/main`` points to, plus a
``config_sentence_transformers.json`` with prompts. Nothing is downloaded: ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask
from mteb.types import PromptType

from mteb_vllm import VllmEncoderWrapper

REPO = "test-org/minilm-prompted"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PROMPTS = {"query": "query: ", "document": "passage: "}


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, minilm_path):
    """A Hugging Face hub cache with REPO at COMMIT (``refs/main``), as huggingface_hub lays it out."""
    root = tmp_path_factory.mktemp("hf-hub-cache")
    repo = root / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(minilm_path, snapshot, ignore=shutil.ignore_patterns("*.md", ".git*"))
    st = json.loads((snapshot / "config_sentence_transformers.json").read_text())
    (snapshot / "config_sentence_transformers.json").write_text(json.dumps({**st, "prompts": PROMPTS}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return root


@pytest.fixture
def offline_cache(hub_cache, monkeypatch):
    import huggingface_hub.constants as constants

    from mteb_vllm import checkpoint as model_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model_config.read_json_file.cache_clear()
    model_config.hf_text_config.cache_clear()
    yield hub_cache
    model_config.read_json_file.cache_clear()
    model_config.hf_text_config.cache_clear()


def test_a_hub_model_gets_its_prompts_from_the_cache_and_names_its_commit(offline_cache):
    wrapper = VllmEncoderWrapper(REPO, backend="fake")
    task = MockRetrievalTask().metadata
    assert wrapper.resolve_prompt(task, PromptType.query).prefix == "query: "
    assert wrapper.resolve_prompt(task, PromptType.document).prefix == "passage: "
    assert wrapper.mteb_model_meta.name == REPO


def test_the_local_engine_loads_and_records_the_resolved_commit(offline_cache):
    from mteb_vllm.backends.local import LocalVllmBackend

    wrapper = VllmEncoderWrapper(REPO, backend="local", lazy_start=True)  # nothing starts: only files are read
    assert isinstance(wrapper.engine, LocalVllmBackend) and not wrapper.engine.started
    assert wrapper.engine.config.revision == COMMIT  # the engine would load exactly this commit ...
    assert wrapper.mteb_model_meta.revision == COMMIT  # ... and the results name it
    assert wrapper.engine.max_model_len == 256  # read from the cached sentence-transformers config
    wrapper.close()


def test_a_registry_model_loads_the_revision_mteb_pins(offline_cache):
    import mteb

    wrapper = VllmEncoderWrapper("intfloat/e5-small", backend="fake")
    pinned = mteb.get_model_meta("intfloat/e5-small").revision
    assert wrapper.config.revision == pinned and wrapper.mteb_model_meta.revision == pinned
    other = VllmEncoderWrapper("intfloat/e5-small", "v2", backend="fake")  # the user's revision wins
    assert other.config.revision == "v2"


@pytest.mark.engine
def test_the_cli_runs_a_hub_id_offline_from_the_cache(offline_cache, tmp_path, monkeypatch, capsys):
    """The engine itself loads the hub id from the cache, at the commit the results are filed under."""
    from mteb_vllm.cli import main

    monkeypatch.setenv("HF_HUB_CACHE", str(offline_cache))
    code = main(["run", "--model", REPO, "--dtype", "float32", "--tasks", "MtebVllmDemoRetrieval", "--no-cache",
                 "--output-folder", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert f"{REPO} @ {COMMIT}, float32" in out and "engine started in" in out
    files = list(Path(tmp_path).rglob("MtebVllmDemoRetrieval.json"))
    assert [f.relative_to(tmp_path).parts[1:4] for f in files] == [
        (REPO.replace("/", "__"), COMMIT, "experiments")]
