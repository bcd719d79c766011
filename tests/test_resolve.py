"""Which weights, revision and trust setting a model name resolves to (resolve.py), before anything loads."""

from __future__ import annotations

import pytest

from mteb_vllm.resolve import registry_meta, registry_trust_remote_code, resolve_model


@pytest.mark.parametrize(("name", "trust"), [("nomic-ai/nomic-embed-text-v1.5", True),
                                             ("jinaai/jina-embeddings-v3", True), ("intfloat/e5-small", False)])
def test_trust_remote_code_follows_the_registry_loader(name, trust):
    """mteb's reference loader passes trust_remote_code=True for nomic and jina: so do we, by default."""
    meta = registry_meta(name)
    assert registry_trust_remote_code(meta) is trust
    assert meta.loader_kwargs.get("trust_remote_code", False) is trust  # the registry really says so


def test_unknown_models_do_not_run_their_code_and_an_explicit_choice_wins(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["BertModel"]}')
    assert registry_trust_remote_code(None) is False
    assert resolve_model(str(tmp_path)).trust_remote_code is False
    assert resolve_model(str(tmp_path), trust_remote_code=True).trust_remote_code is True
