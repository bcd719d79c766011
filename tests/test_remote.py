"""The remote backend over `vllm serve` endpoints: same numbers as the local engine, and a fleet that loses
servers, answers 500s or garbage, or serves the wrong model still finishes the work or says clearly why not.

Fake servers (separate processes over FakeBackend) test the client's logic; real `vllm serve` processes on
127.0.0.1, started through ``mteb_vllm.serve``, test that a fleet gives the local engine's numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from mteb_vllm import VllmCrossEncoderWrapper, VllmEncoderWrapper
from mteb_vllm.backends.remote import RemoteEndpointError, RemoteOptions
from mteb_vllm.errors import UsageError
from mteb_vllm.testing.fake_server import FakeServer, FakeServerConfig, free_port

TEXTS = [f"sentence {i} about rivers, mountains and {i % 7} towns" for i in range(400)]


def _fake(minilm_path, **overrides) -> FakeServer:
    """A fake server that serves the packaged MiniLM's name and tokenizer (for /score pairs)."""
    return FakeServer(FakeServerConfig(model=minilm_path, max_model_len=256, tokenizer=minilm_path, **overrides))


def _local_fake(minilm_path):
    """What every fake server computes, in this process: the reference for the fleet's answers."""
    from mteb_vllm.model_config import load_tokenizer
    from mteb_vllm.testing import FakeBackend

    return FakeBackend(max_model_len=256, tokenizer=load_tokenizer(minilm_path))


@pytest.mark.slow
def test_a_server_killed_mid_run_is_taken_out_and_the_others_finish_identically(minilm_path, caplog):
    with _fake(minilm_path) as healthy, _fake(minilm_path, kill_at_request=4) as dying:
        encoder = VllmEncoderWrapper(minilm_path, endpoints=[dying, healthy], dtype="float32",
                                     ignore_prompt_errors=True)
        encoder.backend.options = RemoteOptions(batch_inputs=20, max_in_flight=2, backoff=0.01)
        with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
            remote = encoder.embed_texts(TEXTS)
    local = VllmEncoderWrapper(minilm_path, backend=_local_fake(minilm_path)).embed_texts(TEXTS)
    assert remote.tobytes() == local.tobytes()
    assert f"endpoint {dying} taken out" in caplog.text
    assert [e.url for e in encoder.backend.endpoints if e.ejected] == [dying]


@pytest.mark.slow
def test_transient_500s_are_retried_elsewhere_and_a_failing_server_is_ejected(minilm_path, caplog):
    with _fake(minilm_path, error_rate=1.0) as broken, _fake(minilm_path, error_rate=0.2, seed=3) as flaky:
        encoder = VllmEncoderWrapper(minilm_path, endpoints=[broken, flaky], dtype="float32",
                                     ignore_prompt_errors=True)
        encoder.backend.options = RemoteOptions(batch_inputs=25, backoff=0.01, attempts=8)
        with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
            remote = encoder.embed_texts(TEXTS)
    assert remote.tobytes() == VllmEncoderWrapper(minilm_path, backend=_local_fake(minilm_path)).embed_texts(
        TEXTS).tobytes()
    assert "injected failure" in caplog.text  # the broken server was left out at the start or taken out later
    assert [e.url for e in encoder.backend.endpoints if e.ejected] == [broken]


@pytest.mark.slow
def test_all_endpoints_down_is_a_clear_error_not_a_hang(minilm_path):
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    with pytest.raises(RemoteEndpointError, match=r"no endpoint answers: .*not reachable.*mteb-vllm serve"):
        VllmEncoderWrapper(minilm_path, endpoints=dead, ignore_prompt_errors=True)


@pytest.mark.slow
def test_every_server_dying_mid_run_is_a_clear_error(minilm_path):
    with _fake(minilm_path, kill_at_request=3) as a, _fake(minilm_path, kill_at_request=3) as b:
        encoder = VllmEncoderWrapper(minilm_path, endpoints=[a, b], ignore_prompt_errors=True)
        encoder.backend.options = RemoteOptions(batch_inputs=10, backoff=0.01)
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
        encoder = VllmEncoderWrapper(minilm_path, endpoints=[garbage], ignore_prompt_errors=True, lazy_start=True)
        encoder.backend.options = RemoteOptions(backoff=0.01)
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
    with _fake(minilm_path) as a, FakeServer(FakeServerConfig(model=minilm_path, max_model_len=128)) as b:
        with pytest.raises(RemoteEndpointError, match=r"different context lengths \[128, 256\]"):
            VllmEncoderWrapper(minilm_path, endpoints=[a, b], ignore_prompt_errors=True)


@pytest.mark.slow
def test_pairs_go_to_score_as_truncated_texts_and_score_as_locally(minilm_path, tmp_path):
    folder = _cross_encoder_dir(minilm_path, tmp_path)
    queries = ["which river " * 3] * 30 + ["long query " * 200]
    docs = [f"the river {i} flows " * (i + 1) for i in range(30)] + ["long document " * 300]
    with FakeServer(FakeServerConfig(model=folder, max_model_len=256, tokenizer=minilm_path)) as url:
        remote = VllmCrossEncoderWrapper(folder, endpoints=[url], dtype="float32").score_pairs(queries, docs)
    local = VllmCrossEncoderWrapper(folder, backend=_local_fake(minilm_path)).score_pairs(queries, docs)
    np.testing.assert_array_equal(remote, local)


# --- real `vllm serve` on 127.0.0.1 -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    """Start `vllm serve` through our launcher; yields a function (model, task) -> URL; stops them all."""
    from mteb_vllm.serve import plan_server, start_server, stop_server, wait_healthy

    started = []

    def serve(model: str, task: str = "embed") -> str:
        plan = plan_server(model, task=task, dtype="float32", port=free_port())
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


def test_an_endpoint_serves_our_model_by_id_or_by_the_folder_it_was_started_from():
    from mteb_vllm.backends.remote import _same_model

    assert _same_model("intfloat/e5-small", {"intfloat/e5-small"})
    assert _same_model("intfloat/E5-small", {"intfloat/e5-small"})
    assert _same_model("/models/e5-small", {"intfloat/e5-small"})  # our local copy, served by its hub id
    assert _same_model("intfloat/e5-small", {"/data/e5-small"})  # a server started from a local copy
    assert not _same_model("intfloat/e5-small", {"someone/e5-small"})  # another organisation's model
    assert not _same_model("intfloat/e5-small", {"intfloat/e5-base"})


@pytest.mark.slow
def test_a_500_whose_text_says_cannot_is_a_down_endpoint_not_a_wrong_one(minilm_path, caplog):
    """Endpoints are sorted by what the check found, not by words in a server's error text."""
    failing_server = _fake(minilm_path, error_rate=1.0, error_message="cannot allocate memory")
    with _fake(minilm_path) as good, failing_server as failing:
        with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
            encoder = VllmEncoderWrapper(minilm_path, endpoints=[good, failing], ignore_prompt_errors=True)
    assert f"endpoint left out: {failing}: failing on" in caplog.text
    assert [e.url for e in encoder.backend.endpoints if e.ejected] == [failing]


@pytest.mark.slow
def test_driving_a_fleet_needs_no_vllm(minilm_path, tmp_path):
    """The README's promise: `pip install mteb-vllm` without vLLM is enough to drive servers."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['vllm'] = None\n"  # any `import vllm` now fails
            "from mteb_vllm import VllmEncoderWrapper\n"
            "from mteb_vllm.testing import FakeServer, FakeServerConfig\n"
            f"p = {minilm_path!r}\n"
            "with FakeServer(FakeServerConfig(model=p, max_model_len=256, tokenizer=p)) as url:\n"
            "    w = VllmEncoderWrapper(p, endpoints=[url], ignore_prompt_errors=True, cache_dir=sys.argv[1])\n"
            "    print(w.embed_texts(['a b', 'c']).shape)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "(2, 64)", proc.stderr[-2000:]


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
