"""Registry prompts equal what mteb's reference loader applies (no weights needed)."""

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
