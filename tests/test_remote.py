"""The remote backend over `vllm serve` endpoints: same numbers as the local engine, and a fleet that loses
servers, answers 500s or garbage, or serves the wrong model still finishes the work or says clearly why not.

Fake servers (separate processes over FakeBackend) test the client's logic; real `vllm serve` processes on
127.0.0.1, started through ``mteb_vllm.serve``, test that a fleet gives the local engine's numbers.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np
import pytest

from mteb_vllm import VllmCrossEncoderWrapper, VllmEncoderWrapper
from mteb_vllm.backends.remote import RemoteEndpointError, RemoteOptions
from mteb_vllm.errors import UsageError
from mteb_vllm.testing.fake_server import FakeServer, FakeServerConfig, free_port

TEXTS = [f"sentence {i} about rivers, mountains and {i % 7} towns" for i in range(400)]


DIM = 384  # MiniLM's pooled width: a fleet answering another width for it is refused


def _fake(minilm_path, **overrides) -> FakeServer:
    """A fake server that serves the packaged MiniLM's name, width and tokenizer (for /score pairs)."""
    overrides.setdefault("dim", DIM)
    return FakeServer(FakeServerConfig(model=minilm_path, max_model_len=256, tokenizer=minilm_path, **overrides))


def _local_fake(minilm_path, max_model_len=256):
    """What every fake server computes, in this process: the reference for the fleet's answers."""
    from mteb_vllm.checkpoint import load_tokenizer
    from mteb_vllm.testing import FakeBackend

    return FakeBackend(dim=DIM, max_model_len=max_model_len, tokenizer=load_tokenizer(minilm_path))


@pytest.mark.slow
def test_a_server_killed_mid_run_is_taken_out_and_the_others_finish_identically(minilm_path, caplog):
    with _fake(minilm_path) as healthy, _fake(minilm_path, kill_at_request=4) as dying:
        encoder = VllmEncoderWrapper(minilm_path, endpoints=[dying, healthy], dtype="float32",
                                     ignore_prompt_errors=True,
                                     remote_options=RemoteOptions(batch_inputs=20, max_in_flight=2, backoff=0.01))
        with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
            remote = encoder.embed_texts(TEXTS)
    local = VllmEncoderWrapper(minilm_path, backend=_local_fake(minilm_path)).embed_texts(TEXTS)
    assert remote.tobytes() == local.tobytes()
    assert f"endpoint {dying} taken out" in caplog.text
    assert [e.url for e in encoder.engine.endpoints if e.ejected] == [dying]


@pytest.mark.slow
def test_transient_500s_are_retried_elsewhere_and_a_failing_server_is_ejected(minilm_path, caplog):
    with _fake(minilm_path, error_rate=1.0) as broken, _fake(minilm_path, error_rate=0.2, seed=3) as flaky:
        encoder = VllmEncoderWrapper(minilm_path, endpoints=[broken, flaky], dtype="float32",
                                     ignore_prompt_errors=True,
                                     remote_options=RemoteOptions(batch_inputs=25, backoff=0.01, attempts=8))
        with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
            remote = encoder.embed_texts(TEXTS)
    assert remote.tobytes() == VllmEncoderWrapper(minilm_path, backend=_local_fake(minilm_path)).embed_texts(
        TEXTS).tobytes()
    assert "injected failure" in caplog.text  # the broken server was left out at the start or taken out later
    assert [e.url for e in encoder.engine.endpoints if e.ejected] == [broken]


@pytest.mark.slow
def test_all_endpoints_down_is_a_clear_error_not_a_hang(minilm_path):
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    with pytest.raises(RemoteEndpointError, match=r"no endpoint answers: .*not reachable.*mteb-vllm serve"):
        VllmEncoderWrapper(minilm_path, endpoints=dead, ignore_prompt_errors=True)


@pytest.mark.slow
def test_every_server_dying_mid_run_is_a_clear_error(minilm_path):
    with _fake(minilm_path, kill_at_request=3) as a, _fake(minilm_path, kill_at_request=3) as b:
        encoder = VllmEncoderWrapper(minilm_path, endpoints=[a, b], ignore_prompt_errors=True,
                                     remote_options=RemoteOptions(batch_inputs=10, backoff=0.01, outage_wait=1.0))
        with pytest.raises(RemoteEndpointError, match="taken out|failed"):
            encoder.embed_texts(TEXTS)


@pytest.mark.slow
def test_wrong_model_missing_capability_malformed_json_and_bad_urls_are_named(minilm_path, tmp_path):
    with FakeServer(FakeServerConfig(model="someone/else")) as other:
        with pytest.raises(RemoteEndpointError, match=r"serves \['someone/else'\], not"):
            VllmEncoderWrapper(minilm_path, endpoints=[other], ignore_prompt_errors=True)
    folder = _cross_encoder_dir(minilm_path, tmp_path)
    with FakeServer(FakeServerConfig(model=folder, tokenizer=minilm_path, tasks=["embed"])) as embed_only:
        with pytest.raises(RemoteEndpointError, match="cannot score pairs .*mteb-vllm serve --task classify"):
            VllmCrossEncoderWrapper(folder, endpoints=[embed_only])
    with _fake(minilm_path, malformed=True) as garbage:
        encoder = VllmEncoderWrapper(minilm_path, endpoints=[garbage], ignore_prompt_errors=True, lazy_start=True,
                                     remote_options=RemoteOptions(backoff=0.01))
        with pytest.raises(RemoteEndpointError, match="no endpoint answers: .*something else than vLLM's format"):
            encoder.embed_texts(TEXTS[:5])
    for bad in ("localhost:8000", "ftp://x", "http://"):
        with pytest.raises(UsageError, match="is not an http"):
            VllmEncoderWrapper(minilm_path, endpoints=[bad], ignore_prompt_errors=True)


def _cross_encoder_dir(minilm_path, tmp_path):
    from tiny_models import classifier_config_only

    return classifier_config_only(minilm_path, Path(tmp_path) / "fake-cross-encoder")


@pytest.mark.slow
def test_endpoints_serving_different_context_lengths_are_refused(minilm_path):
    with _fake(minilm_path) as a, FakeServer(FakeServerConfig(model=minilm_path, max_model_len=128, dim=DIM)) as b:
        with pytest.raises(RemoteEndpointError, match=r"different context lengths \[128, 256\]"):
            VllmEncoderWrapper(minilm_path, endpoints=[a, b], ignore_prompt_errors=True)


@pytest.mark.slow
def test_pairs_go_to_score_as_truncated_texts_and_score_as_locally(minilm_path, tmp_path):
    folder = _cross_encoder_dir(minilm_path, tmp_path)
    queries = ["which river " * 3] * 30 + ["long query " * 200]
    docs = [f"the river {i} flows " * (i + 1) for i in range(30)] + ["long document " * 300]
    # A plain server applies its own activation to a sentence-transformers cross-encoder: refused, with the fix.
    with FakeServer(FakeServerConfig(model=folder, max_model_len=512, tokenizer=minilm_path, dim=DIM)) as url:
        with pytest.raises(RemoteEndpointError, match=r"do not report what they compute.*Sigmoid.*mteb-vllm serve"):
            VllmCrossEncoderWrapper(folder, endpoints=[url], dtype="float32")
    # A server that says what it computes, as `mteb-vllm serve` does: raw logits, the activation is the wrapper's.
    served = _identity(folder, convert="classify", pooler={"task": "classify", "use_activation": False},
                       max_model_len=512)  # sentence-transformers' CrossEncoder truncates MiniLM at 512
    with FakeServer(FakeServerConfig(model=folder, max_model_len=512, tokenizer=minilm_path, dim=DIM,
                                     identity=served)) as url:
        remote = VllmCrossEncoderWrapper(folder, endpoints=[url], dtype="float32").score_pairs(queries, docs)
    local = VllmCrossEncoderWrapper(folder, backend=_local_fake(minilm_path, 512)).score_pairs(queries, docs)
    np.testing.assert_array_equal(remote, local)


# --- real `vllm serve` on 127.0.0.1 -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    """Start `vllm serve` through our launcher; yields a function (model, task) -> URL; stops them all."""
    from mteb_vllm.serve import plan_server, start_server, stop_server, wait_healthy

    started = []

    def serve(model: str, task: str = "embed", dtype: str = "float32") -> str:
        plan = plan_server(model, task=task, dtype=dtype, port=free_port())
        log = tmp_path_factory.mktemp("server") / "vllm.log"
        proc = start_server(plan, log_path=str(log))
        started.append(proc)
        try:
            wait_healthy(plan.url, proc, timeout=300)
        except Exception:
            raise RuntimeError(f"vllm serve did not start: {log.read_text()[-3000:]}") from None
        return plan.url

    yield serve
    for proc in started:
        stop_server(proc)


@pytest.mark.engine
@pytest.mark.full  # make test runs the same check on a server started by `mteb-vllm serve` (test_serve.py)
def test_a_real_vllm_serve_gives_the_local_engines_embeddings(real_server, minilm_encoder, minilm_path):
    import mteb

    from mteb_vllm import demo_tasks

    url = real_server(minilm_path)
    remote = VllmEncoderWrapper(minilm_path, endpoints=[url], dtype="float32",
                                model_name="sentence-transformers/all-MiniLM-L6-v2")
    texts = TEXTS + ["word " * 400]  # one over the 256-token context: truncated on our side, identically
    diff = np.abs(remote.embed_texts(texts) - minilm_encoder.embed_texts(texts)).max()
    assert diff <= 1e-6
    ours = {r.task_name: r.get_score() for r in mteb.evaluate(remote, demo_tasks(), cache=None,
                                                                show_progress_bar=False).task_results}
    local = {r.task_name: r.get_score() for r in mteb.evaluate(minilm_encoder, demo_tasks(), cache=None,
                                                                 show_progress_bar=False).task_results}
    assert ours == local
    assert remote.mteb_model_meta.experiment_kwargs == {"dtype": "float32"}


@pytest.mark.engine
@pytest.mark.full  # three real servers (~5 min here); `make test-full` runs it
def test_a_real_fleet_of_two_precisions_is_refused_and_one_of_equals_scores_as_locally(real_server, minilm_encoder,
                                                                                          minilm_path, tmp_path):
    """Issue 18's bar: servers started with different precisions are refused; two equal float32 servers give the
    local engine's scores within 1e-5, filed under experiments/dtype_float32."""
    from mteb_vllm import demo_tasks
    from mteb_vllm.runner import run_tasks

    name = "sentence-transformers/all-MiniLM-L6-v2"
    a, b, half = real_server(minilm_path), real_server(minilm_path), real_server(minilm_path, dtype="bfloat16")
    with pytest.raises(RemoteEndpointError, match=rf"dtype: {a}: float32; {half}: bfloat16"):
        VllmEncoderWrapper(minilm_path, endpoints=[a, half], model_name=name)
    with pytest.raises(RemoteEndpointError, match=r"compute in bfloat16 .*not in the float32 asked for"):
        VllmEncoderWrapper(minilm_path, endpoints=[half], model_name=name, dtype="float32")
    fleet = VllmEncoderWrapper(minilm_path, endpoints=[a, b], model_name=name)
    assert fleet.dtype == "float32" and fleet.backend.info.details["verified"] is True
    local = {r.task_name: r.get_score() for r in mteb_results(minilm_encoder)}
    summary = run_tasks(fleet, demo_tasks(), output_folder=tmp_path, show_progress_bar=False)
    ours = {o.task: o.score for o in summary.outcomes}
    assert ours.keys() == local.keys() and all(abs(ours[t] - local[t]) <= 1e-5 for t in local), (ours, local)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("MtebVllmDemo*.json"))
    assert files and all("/experiments/dtype_float32/" in f for f in files), files
    assert all(e.done > 0 for e in fleet.engine.endpoints)  # both servers did work


def mteb_results(model):
    import mteb

    from mteb_vllm import demo_tasks

    return mteb.evaluate(model, demo_tasks(), cache=None, show_progress_bar=False).task_results


@pytest.mark.full  # one real server (above) covers `vllm serve`; the fake servers cover the /score route's logic
def test_a_real_vllm_serve_gives_the_local_cross_encoders_scores(real_server, bert_reranker, bert_cross_encoder_path):
    url = real_server(bert_cross_encoder_path, task="classify")
    remote = VllmCrossEncoderWrapper(bert_cross_encoder_path, endpoints=[url], dtype="float32")
    rng = np.random.default_rng(4)
    words = "river mountain music code data search engine vector model passage query cat dog".split()
    queries = [" ".join(rng.choice(words, size=int(rng.integers(2, 12)))) for _ in range(40)]
    docs = [" ".join(rng.choice(words, size=int(rng.integers(5, 700)))) for _ in range(40)]  # some over 512
    ours, local = remote.score_pairs(queries, docs), bert_reranker.score_pairs(queries, docs)
    assert remote.truncated > 0
    np.testing.assert_allclose(ours, local, atol=1e-6)


@pytest.mark.slow
def test_llm_reranker_templates_go_to_classify_and_score_as_locally(minilm_path, tmp_path):
    """A score template's one-segment prompts travel as token ids to /classify (no pair re-tokenized)."""
    from mteb_vllm import ScoreTemplate

    template = ScoreTemplate(pair_format="query: {query} document: {document}", prefix="judge relevance. ",
                             suffix=" answer:", true_token="yes", false_token="no")
    queries = ["which river"] * 20 + ["long query " * 10]
    docs = [f"the river {i} flows " * (i + 1) for i in range(20)] + ["long document " * 400]
    with _fake(minilm_path) as url:
        remote = VllmCrossEncoderWrapper(minilm_path, endpoints=[url], template=template, dtype="float32")
        assert remote.backend.route == "classify"
        ours = remote.score_pairs(queries, docs)
        assert remote.truncated == 1  # the long document, cut on our side before it is sent
    local = VllmCrossEncoderWrapper(minilm_path, backend=_local_fake(minilm_path), template=template)
    np.testing.assert_array_equal(ours, local.score_pairs(queries, docs))


@pytest.mark.slow
def test_the_cli_runs_against_repeated_endpoints(minilm_path, tmp_path, capsys):
    """`mteb-vllm run --endpoint A --endpoint B`: every endpoint is checked at the start (a wrong one is named),
    one dying mid-run leaves the other to finish, and the results are saved as for a local run."""
    from mteb_vllm.cli import main

    with _fake(minilm_path) as a, FakeServer(FakeServerConfig(model="someone/else")) as wrong:
        assert main(["run", "--endpoint", a, "--endpoint", wrong, "--no-cache",
                     "--output-folder", str(tmp_path / "refused")]) != 0
    assert wrong in capsys.readouterr().err  # the second --endpoint was taken, checked and named
    with _fake(minilm_path) as a, _fake(minilm_path, kill_at_request=3) as dying:
        code = main(["run", "--endpoint", a, "--endpoint", dying, "--dtype", "float32", "--no-cache",
                     "--output-folder", str(tmp_path / "out")])
        err = capsys.readouterr().err
    assert code == 0, err
    names = {p.stem for p in (tmp_path / "out").rglob("*.json")}
    assert {"MtebVllmDemoSTS", "MtebVllmDemoRetrieval"} <= names


@pytest.mark.slow
def test_a_500_whose_text_says_cannot_is_a_down_endpoint_not_a_wrong_one(minilm_path, caplog):
    """Endpoints are sorted by what the check found, not by words in a server's error text."""
    failing_server = _fake(minilm_path, error_rate=1.0, error_message="cannot allocate memory")
    with _fake(minilm_path) as good, failing_server as failing:
        with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
            encoder = VllmEncoderWrapper(minilm_path, endpoints=[good, failing], ignore_prompt_errors=True)
    assert f"endpoint left out: {failing}: failing on" in caplog.text
    assert [e.url for e in encoder.engine.endpoints if e.ejected] == [failing]


@pytest.mark.slow
def test_driving_a_fleet_needs_no_vllm(minilm_path, tmp_path):
    """The README's promise: `pip install mteb-vllm` without vLLM is enough to drive servers."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['vllm'] = None\n"  # any `import vllm` now fails
            "from mteb_vllm import VllmEncoderWrapper\n"
            "from mteb_vllm.testing import FakeServer, FakeServerConfig\n"
            f"p = {minilm_path!r}\n"
            "with FakeServer(FakeServerConfig(model=p, max_model_len=256, tokenizer=p, dim=384)) as url:\n"
            "    w = VllmEncoderWrapper(p, endpoints=[url], ignore_prompt_errors=True, cache_dir=sys.argv[1])\n"
            "    print(w.embed_texts(['a b', 'c']).shape)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "(2, 384)", proc.stderr[-2000:]


def test_base64_embeddings_decode_in_one_piece_and_ragged_answers_are_malformed():
    import base64

    from mteb_vllm.backends.remote import _decode_base64_rows, _Transient

    rows = np.arange(12, dtype="<f4").reshape(3, 4)
    decoded = _decode_base64_rows([base64.b64encode(r.tobytes()).decode() for r in rows])
    assert [r.tolist() for r in decoded] == rows.tolist()
    # a row of 3 floats and one of 5 sum to 2 x 4: that must never be reshaped into two rows of 4
    ragged = [base64.b64encode(np.ones(n, dtype="<f4").tobytes()).decode() for n in (3, 5)]
    with pytest.raises(_Transient, match="different"):
        _decode_base64_rows(ragged)
    with pytest.raises(_Transient):
        _decode_base64_rows([base64.b64encode(b"abcde").decode()])  # not whole float32 values


# --- identity, agreement, garbage, blips, credentials (fake servers in this process: fast) -----------------------
def _threaded(model, **overrides) -> FakeServer:
    overrides.setdefault("dim", DIM)
    overrides.setdefault("max_model_len", 256)
    return FakeServer(FakeServerConfig(model=model, **overrides), threaded=True)


def _options(**overrides) -> RemoteOptions:
    defaults = dict(backoff=0.01, max_backoff=0.05, readmit_delay=0.05, max_readmit_delay=0.2, outage_wait=3.0,
                    api_key=None)
    return RemoteOptions(**{**defaults, **overrides})


def _backend(model, urls, *, dtype="auto", convert="embed", **options):
    from mteb_vllm.backends.remote import RemoteBackend
    from mteb_vllm.config import EngineConfig

    return RemoteBackend(EngineConfig(model=model, dtype=dtype, convert=convert), endpoints=list(urls),
                         options=_options(**options))


def _identity(model, **changes):
    """What `mteb-vllm serve` reports for the packaged MiniLM in float32 (see test_a_real_fleet_...)."""
    from mteb_vllm.serve_identity import weights_revision

    identity = {"schema": 1, "model": "local", "path": "/srv/models/model", "served_names": [model],
                "revision": weights_revision(model, None), "dtype": "float32", "max_model_len": 256,
                "runner": "pooling", "convert": "embed", "pooler": {"seq_pooling_type": "MEAN", "use_activation": True},
                "hf_overrides": {}, "quantization": None, "head_dtype": "float32", "vllm": "0.32.0",
                "torch": "2.13.0+cpu", "device": "cpu x86_64"}
    return {**identity, **changes}


def _tokens(n=60):
    from mteb_vllm.backends.protocol import TokenizedInput

    return [TokenizedInput([101] + [1000 + (i * 37 + j) % 20000 for j in range(3 + i % 9)] + [102]) for i in range(n)]


def test_endpoints_reporting_different_precisions_are_refused_naming_them(minilm_path):
    with _threaded(minilm_path, identity=_identity(minilm_path)) as a, \
            _threaded(minilm_path, identity=_identity(minilm_path, dtype="bfloat16")) as b:
        with pytest.raises(RemoteEndpointError, match=r"compute .* differently: dtype: ") as err:
            _backend(minilm_path, [a, b])
    assert f"{a}: float32" in str(err.value) and f"{b}: bfloat16" in str(err.value)


def test_an_explicit_dtype_other_than_the_servers_is_refused_and_auto_takes_theirs(minilm_path):
    with _threaded(minilm_path, identity=_identity(minilm_path, dtype="bfloat16")) as a, \
            _threaded(minilm_path, identity=_identity(minilm_path, dtype="bfloat16")) as b:
        with pytest.raises(RemoteEndpointError, match=r"compute in bfloat16 .*not in the float32 asked for"):
            _backend(minilm_path, [a, b], dtype="float32")  # N16/N17: never filed as float32
        backend = _backend(minilm_path, [a, b])
    info = backend.info
    assert backend.dtype == info.dtype == "bfloat16"
    assert info.details["verified"] is True and info.details["identity"].startswith("fleet-")
    assert "results_marker" not in info.details  # a verified fleet files as a local run does
    assert info.details["vllm"] == "0.32.0"


def test_another_checkpoint_is_refused_whatever_its_folder_name(minilm_path):
    """N9: a server started from another folder of the same name is another model; the revision decides."""
    other = _identity(minilm_path, revision="local-0123456789abcdef", path="/data/finetune-v2/model")
    with _threaded(minilm_path, identity=other) as url:
        with pytest.raises(RemoteEndpointError, match=r"revision local-0123456789abcdef, but .* other weights"):
            _backend(minilm_path, [url])
    with _threaded("/data/finetune-v2/model") as url:  # reports nothing: the name is all there is
        with pytest.raises(RemoteEndpointError, match=r"serves \['/data/finetune-v2/model'\], not .*does not report"):
            _backend(minilm_path, [url])
    same = _identity(minilm_path, path="/elsewhere/model")
    with _threaded("/elsewhere/model", identity=same) as url:  # the same weights under another path: fine
        assert _backend(minilm_path, [url]).verified


def test_a_fleet_that_reports_nothing_is_filed_and_cached_apart_from_the_local_engine(minilm_path, tmp_path):
    """N17: a fleet's vectors never land in the namespace a local run reads, nor its results in its folder."""
    from mteb_vllm.checkpoint import load_tokenizer
    from mteb_vllm.testing import FakeBackend

    texts = [f"text {i}" for i in range(30)]
    with _threaded(minilm_path, scale=2.0) as url:  # computes something else than the local engine
        fleet = VllmEncoderWrapper(minilm_path, endpoints=[url], dtype="float32", ignore_prompt_errors=True,
                                   cache_dir=tmp_path, remote_options=_options())
        fleet.embed_texts(texts)
    marker = fleet.backend.info.details["identity"]
    assert fleet.dtype == "float32"
    assert fleet.mteb_model_meta.experiment_kwargs == {"dtype": "float32", "backend": marker}
    local_engine = FakeBackend(dim=DIM, max_model_len=256, tokenizer=load_tokenizer(minilm_path),
                               revision=fleet.backend.info.revision)
    local = VllmEncoderWrapper(minilm_path, backend=local_engine, dtype="float32", ignore_prompt_errors=True,
                               cache_dir=tmp_path)
    local.embed_texts(texts)
    assert local_engine.inputs_seen == len(texts)  # computed, not read from the fleet's entries
    assert local.mteb_model_meta.experiment_kwargs == {"dtype": "float32"}
    with _threaded(minilm_path) as url:  # without dtype, nobody knows the precision: "unknown", filed apart
        unknown = VllmEncoderWrapper(minilm_path, endpoints=[url], ignore_prompt_errors=True,
                                     remote_options=_options())
    assert unknown.dtype == "unknown" and unknown.mteb_model_meta.experiment_kwargs["backend"].startswith("fleet-")


def test_endpoints_answering_the_canary_differently_are_refused(minilm_path):
    with _threaded(minilm_path) as a, _threaded(minilm_path) as b, _threaded(minilm_path, scale=1.01) as c:
        with pytest.raises(RemoteEndpointError, match=rf"{c} answer the canary input differently from {a}, {b}"):
            _backend(minilm_path, [a, b, c], dtype="float32")
        with pytest.raises(RemoteEndpointError, match="cannot be told which is right"):
            _backend(minilm_path, [a, c], dtype="float32")
    # bfloat16 servers differ from each other by their precision's rounding: within its tolerance
    with _threaded(minilm_path, identity=_identity(minilm_path, dtype="bfloat16")) as a, \
            _threaded(minilm_path, identity=_identity(minilm_path, dtype="bfloat16"), scale=1.01) as b:
        assert _backend(minilm_path, [a, b]).dtype == "bfloat16"


def test_vectors_of_another_width_are_refused_naming_the_endpoint(minilm_path):
    """N5: a 64-dim server for a 384-dim model, or two servers of different widths, never reach sklearn."""
    with _threaded(minilm_path, dim=64) as url:
        with pytest.raises(RemoteEndpointError, match=rf"{url} answer 64-dim vectors, but .* pools to 384"):
            _backend(minilm_path, [url])
    with _threaded("some/model", dim=64) as a, _threaded("some/model", dim=32) as b:
        with pytest.raises(RemoteEndpointError, match=rf"differently \({a}, {b};"):
            _backend("some/model", [a, b])


@pytest.mark.parametrize("bad, what", [("nan", "NaN or Inf"), ("zeros", "all-zero"), ("wide", "width|-dim")])
def test_garbage_is_retried_elsewhere_and_never_returned(minilm_path, tmp_path, bad, what, caplog):
    """N6/N7: NaN, all-zero or too wide vectors from one endpoint are refused (named) and computed elsewhere;
    from the only endpoint they fail the call, and nothing is returned or cached."""
    inputs = _tokens()
    with _threaded(minilm_path) as good, _threaded(minilm_path, bad=bad, bad_after=2) as broken:
        with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
            ours = _backend(minilm_path, [broken, good], batch_inputs=10).pool(inputs, "embed")
        assert np.isfinite(ours).all() and (np.abs(ours).sum(axis=1) > 0).all() and ours.shape[1] == DIM
        reference = _backend(minilm_path, [good]).pool(inputs, "embed")
        assert ours.tobytes() == reference.tobytes()
        assert f"endpoint {broken} taken out" in caplog.text
        assert re.search(what, caplog.text)
    with _threaded(minilm_path, bad=bad, bad_after=2) as broken:
        wrapper = VllmEncoderWrapper(minilm_path, endpoints=[broken], ignore_prompt_errors=True, cache_dir=tmp_path,
                                     remote_options=_options(outage_wait=0.1))
        with pytest.raises(RemoteEndpointError, match=rf"{broken}: .*({what})"):
            wrapper.embed_texts([f"text {i}" for i in range(20)])
        assert wrapper.backend.stats.computed == 0
        assert wrapper.backend.namespace.count() == 0


def test_garbage_at_the_start_refuses_the_endpoint(minilm_path):
    with _threaded(minilm_path, bad="zeros") as url:
        with pytest.raises(RemoteEndpointError, match=rf"{url}: answers the canary input with 1 of 1 all-zero"):
            _backend(minilm_path, [url])


def test_every_endpoint_answering_nan_says_the_servers_overflow(minilm_path):
    with _threaded(minilm_path, bad="nan", bad_after=2) as a, _threaded(minilm_path, bad="nan", bad_after=2) as b:
        backend = _backend(minilm_path, [a, b], eject_after=10, outage_wait=0.5)
        with pytest.raises(RemoteEndpointError, match="Every endpoint tried answers NaN/Inf .* --dtype float32"):
            backend.pool(_tokens(5), "embed")


def test_an_endpoint_that_comes_back_is_readmitted(minilm_path, caplog):
    """N3: a server restarted after a blip is used again, in the same call (a fleet with no endpoint waits for
    one) and in the next calls (every call checks the endpoints that were out)."""
    import threading

    inputs = _tokens(200)
    flaky = _threaded(minilm_path)
    with _threaded(minilm_path) as good:
        flaky.start()
        backend = _backend(minilm_path, [flaky.url, good], batch_inputs=10, eject_after=1)
        first = backend.pool(inputs, "embed")
        flaky.stop()
        with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
            assert backend.pool(inputs, "embed").tobytes() == first.tobytes()
        assert [e.ejected for e in backend.endpoints] == [True, False]
        flaky.start()  # back on the same port
        done = backend.endpoints[0].done
        with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
            assert backend.pool(inputs, "embed").tobytes() == first.tobytes()
        assert f"endpoint {flaky.url} passed its check again" in caplog.text
        assert backend.endpoints[0].done > done and not backend.endpoints[0].ejected
    flaky.stop()
    alone = _backend(minilm_path, [flaky.start().url], batch_inputs=10, eject_after=1, outage_wait=20)
    flaky.stop()
    restart = threading.Timer(0.3, flaky.start)

    class RestartWhenWaiting(logging.Handler):  # the server comes back while the fleet waits, not before
        def emit(self, record: logging.LogRecord) -> None:
            if "every endpoint is out; waiting" in record.getMessage() and not restart.is_alive():
                restart.start()

    handler = RestartWhenWaiting()
    logging.getLogger("mteb_vllm").addHandler(handler)
    try:
        assert alone.pool(inputs, "embed").tobytes() == first.tobytes()  # waited for it, did not fail
        assert restart.is_alive() or restart.finished.is_set()  # the wait began with the server down
    finally:
        logging.getLogger("mteb_vllm").removeHandler(handler)
        if restart.is_alive():
            restart.join()
        flaky.stop()


def test_a_fleet_call_never_waits_a_second_for_answers_already_in(minilm_path):
    """Many small batches finishing together: the call ends when the last answer is in, not a wake-up timeout
    (1 s) later because a finished request still looked outstanding, nor a SYN resend (1 s) later because a
    server's listen backlog dropped one of the connections opened at once."""
    inputs = _tokens(16)
    with _threaded(minilm_path) as a, _threaded(minilm_path) as b:
        backend = _backend(minilm_path, [a, b], batch_inputs=1, max_in_flight=8)
        reference = backend.pool(inputs, "embed")
        for _ in range(12):  # without the first fix ~1 call in 4 took > 1 s here, without the second ~1 in 2
            started = time.monotonic()
            assert backend.pool(inputs, "embed").tobytes() == reference.tobytes()
            assert time.monotonic() - started < 0.9


def test_the_start_check_retries_a_blip(minilm_path):
    """N11: one HTTP 500 on the start's canary is a blip, not a down endpoint."""
    with _threaded(minilm_path, fail_first=1) as url:
        backend = _backend(minilm_path, [url])
    assert not backend.endpoints[0].ejected


def test_a_hung_endpoint_fails_in_the_set_time_not_a_quarter_hour(minilm_path, monkeypatch):
    """N12: read/connect timeouts are settable (option, environment) and a hung endpoint is taken out at once."""
    monkeypatch.setenv("MTEB_VLLM_READ_TIMEOUT", "7")
    monkeypatch.setenv("MTEB_VLLM_CONNECT_TIMEOUT", "3")
    assert (RemoteOptions().read_timeout, RemoteOptions().connect_timeout) == (7.0, 3.0)
    monkeypatch.setenv("MTEB_VLLM_READ_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="MTEB_VLLM_READ_TIMEOUT='soon' is not a number"):
        RemoteOptions()
    monkeypatch.delenv("MTEB_VLLM_READ_TIMEOUT")
    monkeypatch.delenv("MTEB_VLLM_CONNECT_TIMEOUT")
    assert 60 <= RemoteOptions().read_timeout <= 300
    with _threaded(minilm_path, bad="hang", bad_after=2) as url:
        backend = _backend(minilm_path, [url], read_timeout=0.25, outage_wait=0.25)
        started = time.monotonic()
        with pytest.raises(RemoteEndpointError, match=r"no answer in time .*none came back within 0.25 s"):
            backend.pool(_tokens(5), "embed")
    assert time.monotonic() - started < 15


def test_api_keys_are_sent_and_credentials_never_shown(minilm_path, monkeypatch, caplog):
    """N15: --api-key / MTEB_VLLM_API_KEY / VLLM_API_KEY go out as a bearer token; no key, password or user name
    appears in an error or a log line."""
    from mteb_vllm.backends.remote import display_url

    for name in ("MTEB_VLLM_API_KEY", "VLLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with _threaded(minilm_path, api_key="s3cret-key") as url:
        with pytest.raises(RemoteEndpointError, match="needs an API key .*--api-key or MTEB_VLLM_API_KEY"):
            _backend(minilm_path, [url])
        with caplog.at_level(logging.DEBUG), pytest.raises(RemoteEndpointError, match="refused our API key") as err:
            _backend(minilm_path, [url], api_key="wrong-key")
        assert "wrong-key" not in str(err.value) + caplog.text
        assert _backend(minilm_path, [url], api_key="s3cret-key").pool(_tokens(3), "embed").shape == (3, DIM)
        for name in ("MTEB_VLLM_API_KEY", "VLLM_API_KEY"):
            monkeypatch.setenv(name, "s3cret-key")
            assert RemoteOptions().api_key == "s3cret-key" and "s3cret" not in repr(RemoteOptions())
            from mteb_vllm.backends.remote import RemoteBackend
            from mteb_vllm.config import EngineConfig

            RemoteBackend(EngineConfig(model=minilm_path, convert="embed"), endpoints=[url])
            monkeypatch.delenv(name)
    with _threaded(minilm_path) as url, caplog.at_level(logging.DEBUG):  # httpx logs every request's URL
        credentials = url.replace("http://", "http://alice:pa55word@")
        assert _backend(minilm_path, [credentials]).pool(_tokens(3), "embed").shape == (3, DIM)
    assert "pa55word" not in caplog.text and "HTTP Request" in caplog.text
    secret_url = f"http://alice:pa55word@127.0.0.1:{free_port()}"
    assert display_url(secret_url).startswith("http://***@127.0.0.1:")
    with caplog.at_level(logging.DEBUG), pytest.raises(RemoteEndpointError) as err:
        _backend(minilm_path, [secret_url], probe_attempts=1)
    shown = str(err.value) + caplog.text
    assert "pa55word" not in shown and "alice" not in shown and "***@127.0.0.1" in shown
    with pytest.raises(UsageError) as err:
        _backend(minilm_path, ["ftp://bob:hunter2@host"])
    assert "hunter2" not in str(err.value)


def test_a_closed_fleet_client_raises_like_a_closed_engine(minilm_path):
    """N26."""
    with _threaded(minilm_path) as url:
        backend = _backend(minilm_path, [url])
        backend.close()
        with pytest.raises(RuntimeError, match="closed; create a new wrapper"):
            backend.pool(_tokens(2), "embed")


def test_a_fleet_reranker_that_cannot_score_fails_before_the_first_stage(minilm_path, tmp_path):
    """N25: the reranker's endpoints are checked before the first stage runs, also after a dense first stage."""
    from mteb_vllm.two_stage import rerank

    class FirstStage:  # touched only if the first stage runs
        @property
        def mteb_model_meta(self):
            raise AssertionError("the first stage ran before the reranker's endpoints were checked")

    folder = _cross_encoder_dir(minilm_path, tmp_path)
    with FakeServer(FakeServerConfig(model=folder, tokenizer=minilm_path, tasks=["embed"]), threaded=True) as url:
        with pytest.raises(RemoteEndpointError, match="cannot score pairs"):
            rerank(None, folder, FirstStage(), top_k=5, reranker_args={"endpoints": [url]},
                   show_progress_bar=False)


def test_the_cli_flags_set_the_fleet_clients_options(monkeypatch):
    from mteb_vllm.cli import build_parser
    from mteb_vllm.cli.common import remote_options_arg

    monkeypatch.delenv("MTEB_VLLM_READ_TIMEOUT", raising=False)
    parser = build_parser()
    args = parser.parse_args(["run", "--endpoint", "http://127.0.0.1:1", "--read-timeout", "30",
                              "--connect-timeout", "2", "--api-key", "k"])
    options = remote_options_arg(args)
    assert (options.read_timeout, options.connect_timeout, options.api_key) == (30.0, 2.0, "k")
    args = parser.parse_args(["rerank", "--model", "m", "--endpoint", "http://127.0.0.1:1"])
    assert remote_options_arg(args).read_timeout == RemoteOptions().read_timeout
    assert remote_options_arg(parser.parse_args(["run"])) is None


def test_a_server_replaced_behind_the_same_url_gets_another_namespace(minilm_path):
    """N18: a fleet that reports nothing is named by its canary answers too, so another server behind the same URL
    (another model, another width) never reads the first one's cache entries or results."""
    port = free_port()
    with FakeServer(FakeServerConfig(model=minilm_path, dim=DIM, max_model_len=256), port=port, threaded=True) as url:
        first = _backend(minilm_path, [url]).info.details["identity"]
        assert _backend(minilm_path, [url]).info.details["identity"] == first  # stable for the same server
    with FakeServer(FakeServerConfig(model=minilm_path, dim=DIM, max_model_len=256, scale=1.5), port=port,
                    threaded=True) as url:
        assert _backend(minilm_path, [url]).info.details["identity"] != first


def test_a_model_whose_pooling_needs_every_token_is_refused_before_any_server_is_asked(minilm_path, tmp_path):
    """Max pooling is a sentence-transformers pooling vLLM does not compute: the wrapper would need every token's
    hidden state, which a fleet does not send. Refused at construction, naming the way out, with no server asked
    (the endpoint below does not exist: asking it would fail otherwise)."""
    import json
    import shutil

    from mteb_vllm.errors import UnsupportedModelError

    folder = tmp_path / "minilm-max"
    shutil.copytree(minilm_path, folder, ignore=shutil.ignore_patterns("*.md"))
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    with pytest.raises(UnsupportedModelError, match="does not fetch; evaluate it with the local engine"):
        VllmEncoderWrapper(str(folder), endpoints=[f"http://127.0.0.1:{free_port()}"], ignore_prompt_errors=True)
