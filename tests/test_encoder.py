"""The encoder's own logic on the FakeBackend: no engine, seconds. Counts are taken at the backend.

The same wrapper on the real engine and real weights: test_encoder_engine.py.
"""

from __future__ import annotations

import logging

import mteb
import numpy as np
import pytest
from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask
from mteb.mocks.mock_tasks.sts import MockSTSTask
from mteb.types import PromptType

from mteb_vllm import VllmEncoderWrapper
from mteb_vllm.backends import create_backend, register_backend
from mteb_vllm.errors import (
    EngineArgumentError,
    ModelNotFoundError,
    NonFiniteOutputError,
    UnsupportedModelError,
)
import shutil

from mteb_vllm.testing import FakeBackend
from mteb_vllm.testing.fake_backend import fake_model_folder

STS = MockSTSTask().metadata
RETRIEVAL = MockRetrievalTask().metadata


def _encode(wrapper, texts, meta=STS, prompt_type=None, subset="default"):
    return wrapper.encode([{"text": texts}], task_metadata=meta, hf_split="test", hf_subset=subset,
                          prompt_type=prompt_type)


def _shared(**kwargs):
    """A wrapper on a FakeBackend the test holds, so it can count what reached the 'engine'."""
    max_len = kwargs.pop("max_model_len", 64)
    backend = FakeBackend(max_model_len=max_len)
    return VllmEncoderWrapper("fake/encoder", backend=backend, max_model_len=max_len, **kwargs), backend


def test_duplicates_reach_the_backend_once_and_order_is_kept():
    wrapper, backend = _shared()
    out = wrapper.embed_texts(["b", "a", "b", "c", "a"])
    assert backend.inputs_seen == 3
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], out[4])
    assert not np.allclose(out[0], out[1])
    single = wrapper.embed_texts(["c"])
    np.testing.assert_array_equal(single[0], out[3])  # the same text gives the same vector in any batch


def test_truncation_is_counted_and_the_backend_never_sees_too_many_tokens():
    wrapper, backend = _shared(max_model_len=32)
    texts = ["short", "x" * 500, "y" * 31, "z" * 29]  # one token per byte, plus [CLS] and [SEP]
    out = wrapper.embed_texts(texts)  # FakeBackend raises on inputs longer than max_model_len
    assert out.shape == (4, backend.dim)
    assert wrapper.stats.truncated == 2
    assert max(c.tokens for c in backend.calls) <= 4 * 32


def test_static_prompts_reach_the_model_per_side():
    wrapper, _ = _shared(prompt_dict={"query": "query: ", "document": "passage: "})
    plain, _ = _shared()
    q = _encode(wrapper, ["hello"], RETRIEVAL, PromptType.query)
    d = _encode(wrapper, ["hello"], RETRIEVAL, PromptType.document)
    np.testing.assert_array_equal(q[0], plain.embed_texts(["query: hello"])[0])
    np.testing.assert_array_equal(d[0], plain.embed_texts(["passage: hello"])[0])


def test_instructions_go_through_the_template_and_can_skip_documents():
    wrapper, _ = _shared(prompt_dict={"Retrieval": "find it"}, use_instructions=True,
                         instruction_template="Instruct: {instruction}\nQuery: ", apply_instruction_to_documents=False)
    assert wrapper.resolve_prompt(RETRIEVAL, PromptType.query).prefix == "Instruct: find it\nQuery: "
    assert wrapper.resolve_prompt(RETRIEVAL, PromptType.document).prefix == ""
    with pytest.raises(EngineArgumentError, match="needs an instruction_template"):
        VllmEncoderWrapper("fake/encoder", backend=FakeBackend(), use_instructions=True)


def test_registry_prompts_are_replayed_with_no_arguments():
    wrapper = VllmEncoderWrapper("intfloat/e5-small", backend="fake")
    assert wrapper.resolve_prompt(RETRIEVAL, PromptType.query).prefix == "query: "
    assert wrapper.resolve_prompt(RETRIEVAL, PromptType.document).prefix == "passage: "
    meta = wrapper.mteb_model_meta
    assert meta.name == "intfloat/e5-small" and meta.revision == mteb.get_model_meta("intfloat/e5-small").revision


class _SubsetAndExperimentModel:
    """A reference loader whose prompt depends on hf_subset and on an experiment argument."""

    def __init__(self, name, revision=None, style="plain", **kwargs):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(name)
        self.style = style

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
        texts = [t for batch in inputs for t in batch["text"]]
        return self.model.encode(texts, prompt=f"[{self.style}:{hf_subset}] ")


def _meta_with_loader(**overrides):
    from mteb.models import ModelMeta

    return ModelMeta.create_empty(overwrites={"name": "test/subset-model", "revision": "abc123",
                                              "loader": _SubsetAndExperimentModel, **overrides})


def test_prompts_follow_hf_subset_and_experiment_kwargs():
    meta = _meta_with_loader(loader_kwargs={"style": "loader"}, experiment_kwargs={"style": "experiment"})
    wrapper = VllmEncoderWrapper(meta, backend=FakeBackend())
    assert wrapper.resolve_prompt(STS, None, "en").prefix == "[experiment:en] "
    assert wrapper.resolve_prompt(STS, None, "de").prefix == "[experiment:de] "
    np.testing.assert_array_equal(_encode(wrapper, ["x"], subset="de")[0],
                                  wrapper.embed_texts(["[experiment:de] x"])[0])


class _BrokenLoader:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("needs a GPU-only package")


def test_a_registry_loader_that_fails_is_refused_unless_opted_out(caplog):
    meta = _meta_with_loader(loader=_BrokenLoader)
    backend = FakeBackend()
    with pytest.raises(UnsupportedModelError, match=r"test/subset-model: mteb registry loader _BrokenLoader fails "
                                                    r"\(RuntimeError: needs a GPU-only package\)"):
        VllmEncoderWrapper(meta, backend=backend)
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        wrapper = VllmEncoderWrapper(meta, backend=backend, ignore_prompt_errors=True)
    assert wrapper.resolve_prompt(STS, None).prefix == ""
    assert "mteb's default sentence-transformers setup instead" in caplog.text
    assert wrapper.mteb_model_meta.experiment_kwargs["loader"] == "default"


def test_unknown_model_uses_its_own_sentence_transformers_prompts(tmp_path):
    shutil.copytree(fake_model_folder(), tmp_path, dirs_exist_ok=True)
    (tmp_path / "config_sentence_transformers.json").write_text('{"prompts": {"query": "Q: ", "document": "D: "}}')
    wrapper = VllmEncoderWrapper(str(tmp_path), backend=FakeBackend())
    assert wrapper.resolve_prompt(RETRIEVAL, PromptType.query).prefix == "Q: "
    assert wrapper.mteb_model_meta.name == tmp_path.name
    assert wrapper.mteb_model_meta.revision.startswith("local-")  # the folder's content hash


def test_local_weights_under_a_registry_name_keep_their_own_revision(tmp_path, caplog):
    (tmp_path / "config.json").write_text('{"architectures": ["BertModel"], "model_type": "bert"}')
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        wrapper = VllmEncoderWrapper(str(tmp_path), model_name="intfloat/e5-small", backend=FakeBackend())
    meta = wrapper.mteb_model_meta
    assert meta.name == "intfloat/e5-small"
    assert meta.revision.startswith("local-") and meta.revision != mteb.get_model_meta("intfloat/e5-small").revision
    assert "under mteb's registry name intfloat/e5-small" in caplog.text
    assert wrapper.resolve_prompt(RETRIEVAL, PromptType.query).prefix == "query: "  # the registry's prompts
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    other = VllmEncoderWrapper(str(tmp_path), model_name="intfloat/e5-small", backend=FakeBackend())
    assert other.mteb_model_meta.revision != meta.revision
    with pytest.raises(EngineArgumentError, match="identified by the content hash"):
        VllmEncoderWrapper(str(tmp_path), revision="v1", backend=FakeBackend())


def test_the_precision_is_recorded_in_the_results_namespace():
    wrapper = VllmEncoderWrapper("fake/encoder", backend="fake", dtype="bfloat16", ignore_prompt_errors=True)
    assert wrapper.dtype == "bfloat16"
    assert wrapper.mteb_model_meta.experiment_kwargs == {"dtype": "bfloat16"}
    assert wrapper.mteb_model_meta.experiment_name == "dtype_bfloat16"


@pytest.fixture
def overflowing_backend():
    """A factory whose engines overflow in bfloat16 (what dtype='auto' picks on this kind of CPU)."""
    made = []

    def factory(config, **options):
        made.append(FakeBackend(config, auto_dtype="bfloat16", nonfinite_dtypes=("bfloat16",)))
        return made[-1]

    register_backend("fake-overflow", factory)
    yield made
    from mteb_vllm.backends import BACKENDS

    BACKENDS.pop("fake-overflow")


def test_nan_in_auto_half_precision_is_rerun_once_in_float32(overflowing_backend, caplog):
    wrapper = VllmEncoderWrapper("fake/encoder", backend="fake-overflow")
    assert wrapper.dtype == "bfloat16"
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        out = wrapper.embed_texts(["a", "b"])
    assert np.isfinite(out).all()
    assert wrapper.dtype == "float32" and wrapper.precision_fallbacks == ["bfloat16->float32"]
    assert wrapper.mteb_model_meta.experiment_kwargs["dtype"] == "float32"
    assert "restarting the engine in float32" in caplog.text
    first, second = overflowing_backend
    assert first.closed and not second.closed and second.dtype == "float32"


def test_nan_with_an_explicit_dtype_is_an_error(overflowing_backend):
    wrapper = VllmEncoderWrapper("fake/encoder", backend="fake-overflow", dtype="bfloat16")
    with pytest.raises(NonFiniteOutputError, match=r"1 embeddings contain NaN or Inf with dtype bfloat16.*"
                                                   r"dtype='float32'"):
        wrapper.embed_texts(["a", "b"])
    assert len(overflowing_backend) == 1  # no second engine behind the user's back


@pytest.fixture
def overflowing_on():
    """A factory of engines that overflow in bfloat16 (dtype='auto' here) only on texts containing the given
    strings, as a real model's activations outgrow a half precision on some inputs only."""
    made = []

    def factory(texts):
        def make(config, **options):
            made.append(FakeBackend(config, auto_dtype="bfloat16", nonfinite_texts=texts))
            return made[-1]

        register_backend("fake-overflow-on", make)
        return VllmEncoderWrapper("fake/encoder", backend="fake-overflow-on")

    yield factory, made
    from mteb_vllm.backends import BACKENDS

    BACKENDS.pop("fake-overflow-on", None)


def _float32_scores(tasks):
    """The reference: the same tasks computed in float32 from the start."""
    wrapper = VllmEncoderWrapper("fake/encoder", backend=FakeBackend(), dtype="float32")
    result = mteb.evaluate(wrapper, tasks, cache=None, show_progress_bar=False)
    return {r.task_name: r.get_score() for r in result.task_results}


def _filed(folder):
    """{task name: the experiment folder mteb filed it under}."""
    return {path.stem: path.parent.name for path in folder.rglob("*.json") if path.stem.startswith("Mock")}


def test_an_overflow_in_a_tasks_first_call_recomputes_it_and_files_it_under_float32(overflowing_on, tmp_path):
    """Issue 18: under a plain mteb.evaluate the fallback must not file float32 scores under bfloat16 (mteb reads
    the model's meta once, when it starts) nor mix precisions. Retrieval's queries come first: they overflow."""
    from mteb.cache import ResultCache

    factory, made = overflowing_on
    wrapper = factory(("another test sentence",))
    result = mteb.evaluate(wrapper, [MockRetrievalTask(), MockSTSTask()], cache=ResultCache(str(tmp_path)),
                           show_progress_bar=False)
    assert len(made) == 2 and len(made[0].calls) == 1  # only the first call ran in bfloat16, and was redone
    assert _filed(tmp_path) == {"MockRetrievalTask": "dtype_float32", "MockSTSTask": "dtype_float32"}
    assert {r.task_name: r.get_score() for r in result.task_results} == _float32_scores(
        [MockRetrievalTask(), MockSTSTask()])


def test_an_overflow_after_half_precision_calls_of_a_task_stops_it_and_it_is_evaluated_again(overflowing_on,
                                                                                              tmp_path):
    """The queries were returned in bfloat16 when the documents overflow: the task cannot be finished without
    mixing precisions, so it stops with a clear error; evaluated again, it runs (and is filed) in float32."""
    from mteb.cache import ResultCache

    from mteb_vllm.errors import PrecisionChangedError

    factory, made = overflowing_on
    wrapper = factory(("another positive",))
    cache = ResultCache(str(tmp_path))
    with pytest.raises(PrecisionChangedError, match=r"MockRetrievalTask.*evaluate it again.*float32") as caught:
        mteb.evaluate(wrapper, MockRetrievalTask(), cache=cache, show_progress_bar=False)
    assert isinstance(caught.value, NonFiniteOutputError)
    assert (caught.value.previous, caught.value.current) == ("bfloat16", "float32")
    assert _filed(tmp_path) == {} and wrapper.dtype == "float32"
    result = mteb.evaluate(wrapper, MockRetrievalTask(), cache=cache, show_progress_bar=False)
    assert _filed(tmp_path) == {"MockRetrievalTask": "dtype_float32"}
    assert result.task_results[0].get_score() == _float32_scores([MockRetrievalTask()])["MockRetrievalTask"]
    assert len(made) == 2 and made[1].inputs_seen > 0


def test_an_overflow_outside_any_task_is_recomputed(overflowing_on):
    factory, made = overflowing_on
    wrapper = factory(("b",))
    first = wrapper.embed_texts(["a"])  # bfloat16, no task: nothing to keep consistent with
    out = wrapper.embed_texts(["a", "b"])
    assert np.isfinite(out).all() and wrapper.dtype == "float32" and not np.array_equal(out[0], first[0])


def test_missing_paths_and_bad_arguments_fail_before_any_backend():
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        VllmEncoderWrapper("/no/such/model/dir")
    with pytest.raises(EngineArgumentError, match="max_num_seqs"):
        VllmEncoderWrapper("fake/encoder", backend="fake", max_num_seqs=0)
    with pytest.raises(EngineArgumentError, match="unknown backend 'nope'"):
        VllmEncoderWrapper("fake/encoder", backend="nope")
    with pytest.raises(EngineArgumentError, match="endpoints= needs the remote backend"):
        create_backend("fake", None, endpoints=["http://127.0.0.1:1"])


def test_mteb_evaluate_scores_do_not_depend_on_its_batch_size():
    """mteb hands the wrapper its own batches; deduplication and our batching make every text's vector, and so the
    scores, independent of them (bit for bit)."""
    scores = []
    for batch_size in (2, 32):
        wrapper, backend = _shared()
        result = mteb.evaluate(wrapper, [MockSTSTask(), MockRetrievalTask()], cache=None, show_progress_bar=False,
                               encode_kwargs={"batch_size": batch_size})
        scores.append([r.get_score() for r in result.task_results])
        assert backend.inputs_seen > 0
    assert scores[0] == scores[1] and all(np.isfinite(scores[0]))
