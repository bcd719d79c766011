"""Registry names, loader against loader (issue 16): ``mteb.get_model(name)`` (mteb's own loader, in float32)
against ``VllmEncoderWrapper(name)``, both reading tests/registry_zoo.py's offline hub cache at the pinned revision.

Fast tier, no engine: the token ids that reach the model through mteb's encode calls (an STS task, retrieval
queries, retrieval documents: each loader's prompts, instructions, tokenizer kwargs and truncation) are the same,
recorded on the reference's Hugging Face model and at our backend seam; a name we cannot reproduce is refused
before any engine starts. Engine tier: the same STS and retrieval main scores (|delta| <= 1e-4).

float32 for the reference: every loader here forwards its keyword arguments to ``SentenceTransformer``, and
``ModelMeta.load_model`` lets the caller's keys replace the registry's (``{**loader_kwargs, **kwargs}``), so
``mteb.get_model(name, model_kwargs={"dtype": torch.float32})`` replaces the float16 ``model_kwargs`` of the
e5 and gte loaders; the test asserts the loaded weights really are float32.
"""

from __future__ import annotations

import pytest
from model_zoo import medium_text, sentences
from registry_zoo import REGISTRY, build_hub_cache
from zoo_checks import (
    MAX_MAIN_SCORE_DELTA,
    Outcome,
    SpyBackend,
    captured_inputs,
    describe_difference,
    expect_refused,
    hf_model_of,
    main_score,
    no_engine_start,
    retrieval_task,
    spy_backend_registered,
    sts_task,
    text_loader,
)


EXACT = [m for m in REGISTRY if m.expected == "exact"]
REFUSED = [m for m in REGISTRY if m.expected == "refused"]
SECTION = "registry"


def _names(entries):
    return [m.name for m in entries]


@pytest.fixture(scope="module")
def hub():
    return build_hub_cache()


def _clear_file_caches():
    from mteb_vllm import checkpoint as model_config

    for value in vars(model_config).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


@pytest.fixture
def offline_hub(hub, monkeypatch):
    """huggingface_hub (and so transformers, sentence-transformers and our wrapper) reads the zoo's cache only."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _clear_file_caches()
    yield hub
    _clear_file_caches()


def _reference(name):
    import warnings

    import mteb
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = mteb.get_model(name, device="cpu", model_kwargs={"dtype": torch.float32})
    assert next(hf_model_of(model.model).parameters()).dtype == torch.float32, f"{name}: reference not float32"
    return model


def _texts():
    """Real sentences and two texts tokenizers treat specially."""
    return list(sentences()[:16]) + ["  spaces at both ends  ", "MixedCase WORDS"]


def _encode_every_side(model, texts):
    """mteb's three kinds of encode call: a task without prompt type (STS, with one text over 512 tokens for the
    512-token models: the decoders' limits are far above it), retrieval queries, documents."""
    from mteb.types import PromptType

    for task, prompt_type, extra in ((sts_task(), None, [medium_text()]), (retrieval_task(), PromptType.query, []),
                                     (retrieval_task(), PromptType.document, [])):
        model.encode(text_loader(texts + extra), task_metadata=task.metadata, hf_split="test", hf_subset="default",
                     prompt_type=prompt_type, batch_size=32)


def test_the_registry_list_is_complete():
    import mteb

    wanted = {"intfloat/e5-mistral-7b-instruct", "Qwen/Qwen3-Embedding-0.6B", "intfloat/multilingual-e5-large-instruct",
              "BAAI/bge-m3", "Alibaba-NLP/gte-Qwen2-1.5B-instruct", "google/embeddinggemma-300m",
              "nomic-ai/nomic-embed-text-v1.5", "jinaai/jina-embeddings-v3", "BAAI/bge-large-en-v1.5",
              "mixedbread-ai/mxbai-embed-large-v1"}
    assert wanted <= set(_names(REGISTRY))
    for entry in REGISTRY:
        assert entry.revision == mteb.get_model_meta(entry.name).revision and len(entry.revision) == 40
        assert (entry.expected == "refused") == bool(entry.reason), entry.name


def test_e5_mistral_tokenizer_needs_the_loaders_kwargs_for_its_eos(offline_hub):
    """The premise of the e5-mistral entry: the repo's files alone give ``<s> ...`` (transformers 5 keeps
    tokenizer.json's post-processor), add_eos_token alone drops the <s>, both give ``<s> ... </s>``."""
    from transformers import AutoTokenizer

    name = "intfloat/e5-mistral-7b-instruct"
    revision = REGISTRY[0].revision
    plain = AutoTokenizer.from_pretrained(name, revision=revision)("a cat")["input_ids"]
    eos_only = AutoTokenizer.from_pretrained(name, revision=revision, add_eos_token=True)("a cat")["input_ids"]
    both = AutoTokenizer.from_pretrained(name, revision=revision, add_eos_token=True,
                                         add_bos_token=True)("a cat")["input_ids"]
    assert plain[0] == 1 and plain[-1] != 2
    assert eos_only[0] != 1 and eos_only[-1] == 2
    assert both[0] == 1 and both[-1] == 2 and both[1:-1] == plain[1:]


@pytest.mark.parametrize("entry", EXACT, ids=_names(EXACT))
def test_the_model_gets_the_token_ids_mtebs_loader_gives_it(entry, offline_hub):
    from mteb_vllm import VllmEncoderWrapper

    texts = _texts()
    reference = _reference(entry.name)
    with captured_inputs(hf_model_of(reference.model), compute=False) as ref_rows:
        _encode_every_side(reference, texts)
    with no_engine_start(), spy_backend_registered() as spy:
        ours = VllmEncoderWrapper(entry.name, dtype="float32", backend=spy)
        try:
            _encode_every_side(ours, texts)
            sent = SpyBackend.last.token_ids()
        finally:
            ours.close()
    assert sent == set(ref_rows), describe_difference(sent, set(ref_rows))


@pytest.mark.parametrize("entry", REFUSED, ids=_names(REFUSED))
def test_refused_before_any_engine_starts(entry, offline_hub):
    from mteb_vllm import VllmEncoderWrapper

    expect_refused(Outcome(entry.name, SECTION), lambda: VllmEncoderWrapper(entry.name, dtype="float32").close(),
                   entry.reason)


@pytest.mark.engine
@pytest.mark.parametrize("entry", EXACT, ids=_names(EXACT))
def test_registry_model_scores_as_mteb_get_model(entry, session_engine, offline_hub):
    from mteb_vllm import VllmEncoderWrapper

    reference = _reference(entry.name)
    ref_scores = {"sts": main_score(reference, sts_task()), "retrieval": main_score(reference, retrieval_task())}
    outcome = Outcome(entry.name, SECTION)
    with outcome.recording():
        with VllmEncoderWrapper(entry.name, dtype="float32") as ours:
            scores = {"sts": main_score(ours, sts_task()), "retrieval": main_score(ours, retrieval_task())}
        figures = {f"{k}_delta": abs(scores[k] - ref_scores[k]) for k in scores}
        failures = [f"{k} {v:.3g} > {MAX_MAIN_SCORE_DELTA:g}" for k, v in figures.items()
                    if not v <= MAX_MAIN_SCORE_DELTA]
        outcome.set(result="differs" if failures else "exact", reason="; ".join(failures) or None, **figures,
                    reference_scores=ref_scores, scores=scores)
    assert not failures, f"{entry.name}: " + "; ".join(failures) + f" (ours {scores}, reference {ref_scores})"
