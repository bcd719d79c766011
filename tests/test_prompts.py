"""Registry prompts equal what mteb's reference loader applies (no weights needed)."""

import shutil

from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask
from mteb.mocks.mock_tasks.sts import MockSTSTask
from mteb.types import PromptType

from mteb_vllm.prompts import Prompt, reference_prompts
from mteb_vllm.resolve import registry_meta


def test_e5_static_prompts_reach_query_and_document():
    replay = reference_prompts(registry_meta("intfloat/e5-small"), None)
    task = MockRetrievalTask().metadata
    assert replay(task, PromptType.query) == Prompt("query: ")
    assert replay(task, PromptType.document) == Prompt("passage: ")


def test_qwen3_instruction_template_from_loader_function():
    replay = reference_prompts(registry_meta("Qwen/Qwen3-Embedding-0.6B"), None)
    q = replay(MockSTSTask().metadata, PromptType.query)
    assert q.prefix.startswith("Instruct: ") and q.prefix.endswith("\nQuery:")
    assert replay(MockRetrievalTask().metadata, PromptType.document) == Prompt()


def test_unknown_model_uses_its_sentence_transformers_config(tmp_path):
    (tmp_path / "config_sentence_transformers.json").write_text('{"prompts": {"query": "Q: ", "document": "D: "}}')
    replay = reference_prompts(None, str(tmp_path))
    task = MockRetrievalTask().metadata
    assert replay(task, PromptType.query) == Prompt("Q: ")
    assert replay(task, PromptType.document) == Prompt("D: ")


def test_documents_stay_bare_when_the_config_names_passage_or_a_default_prompt(tmp_path):
    """SentenceTransformer v6 always has a "document" prompt (empty unless set), so encode_document never falls
    through to "passage" or default_prompt_name; pinned against the real SentenceTransformer on real weights."""
    import json
    import os

    from sentence_transformers import SentenceTransformer

    from mteb_vllm import default_model_path

    source = default_model_path()
    task = MockRetrievalTask().metadata
    for config, query in [({"prompts": {"query": "query: ", "passage": "passage: "}}, "query: "),
                          ({"prompts": {"query": "q: ", "clf": "c: "}, "default_prompt_name": "clf"}, "q: ")]:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        shutil.copytree(source, folder, symlinks=False,
                        ignore=lambda d, names: [n for n in names if n == "config_sentence_transformers.json"])
        (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
        reference = SentenceTransformer(str(folder), device="cpu")
        assert reference.prompts["document"] == "" and reference.prompts["query"] == query  # the premise
        replay = reference_prompts(None, os.fspath(folder))
        assert replay(task, PromptType.query) == Prompt(query)
        assert replay(task, PromptType.document) == Prompt()
