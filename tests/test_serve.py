"""`mteb-vllm serve`: the `vllm serve` command carries the local engine's settings, and vLLM accepts it; the
server reports what it computes, shows its output, stops on the first Ctrl-C and dies with `mteb-vllm serve`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mteb_vllm.serve import ServePlan, plan_server, run_server
from mteb_vllm.testing.fake_server import free_port

pytestmark = pytest.mark.slow  # imports vLLM (its argument parser), or runs processes


def _parsed(command: list[str]):
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    if "--model" in command:  # python -m vllm.entrypoints.openai.api_server --model M ...
        start = command.index("--model")
        model, rest = command[start + 1], command[start + 2:]
    else:  # vllm serve M ...
        start = command.index("serve")
        model, rest = command[start + 1], command[start + 2:]
    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--middleware", action="append")
    return parser.parse_args(["--model", model, *rest])


def test_an_embedding_server_runs_the_model_as_the_local_engine_does(minilm_path):
    from mteb_vllm.precision import engine_runs_on_cpu, resolve_dtype

    plan = plan_server(minilm_path, port=8123)
    ns = _parsed(plan.command)
    assert (ns.runner, ns.convert, ns.max_model_len) == ("pooling", "embed", 256)
    assert ns.dtype == plan.dtype == resolve_dtype("auto", on_cpu=engine_runs_on_cpu()).dtype  # never "auto"
    assert ns.served_model_name == [minilm_path] and ns.port == 8123 and ns.host == "127.0.0.1"
    assert ns.middleware == ["mteb_vllm.serve_identity.identity_route"]  # the identity route
    if engine_runs_on_cpu():
        assert ns.block_size == 32 and ns.enforce_eager and "VLLM_CPU_OMP_THREADS_BIND" in plan.env
    assert plan.shell().startswith("VLLM_CPU_OMP_THREADS_BIND=") or not engine_runs_on_cpu()


def test_an_llm_reranker_server_gets_the_templates_score_head(qwen3_reranker_path):
    from mteb_vllm.templates import QWEN3_RERANKER

    plan = plan_server(qwen3_reranker_path, task="classify", template=QWEN3_RERANKER, dtype="float32",
                       extra_args=["--max-num-seqs", "8"])
    ns = _parsed(plan.command)
    assert ns.convert == "classify" and ns.dtype == "float32"
    overrides = ns.hf_overrides if isinstance(ns.hf_overrides, dict) else json.loads(ns.hf_overrides)
    assert overrides == {"classifier_from_token": ["no", "yes"], "method": "from_2_way_softmax"}
    assert ns.max_model_len == 1024  # the tiny model's own context (the template allows 8192)
    assert ns.max_num_seqs == 8  # extra arguments come last and win


def test_the_cli_prints_the_command_and_the_client_line(minilm_path, capsys):
    from mteb_vllm.cli import main

    assert main(["serve", minilm_path, "--dry-run", "--port", "8124", "--dtype", "float32", "-dp", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "--data-parallel-size" not in out[0] and out[0].endswith("-dp 2")
    assert main(["serve", minilm_path, "--dry-run", "--api-key", "s3cret", "--port", "8124"]) == 0
    shown = capsys.readouterr().out
    assert "s3cret" not in shown and "--api-key '***'" in shown  # N15: a key is never printed
    assert out[1].startswith(f"# clients: mteb-vllm run --model {minilm_path} --endpoint http://127.0.0.1:8124"
                             " --dtype float32")


# --- the server's life ---------------------------------------------------------------------------------------------
#: A stand-in for `vllm serve`: an HTTP /health, and a child process standing for the engine core (a grandchild of
#: `mteb-vllm serve`, which the kernel's parent-death signal does not reach). With "fail": exits at once with the
#: message a taken port gives.
FAKE_VLLM = r"""
import http.server, os, subprocess, sys, time
port, pidfile = int(sys.argv[1]), sys.argv[2]
print("fake vllm: starting", flush=True)
if sys.argv[3:] == ["fail"]:
    print("ERROR [api_server] OSError: [Errno 98] address already in use", file=sys.stderr, flush=True)
    sys.exit(1)
engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(pidfile + ".tmp", "w") as fh:
    fh.write(f"{os.getpid()} {engine.pid}")
os.replace(pidfile + ".tmp", pidfile)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def _fake_plan(tmp_path: Path, *extra: str) -> tuple[ServePlan, Path]:
    port, pidfile = free_port(), tmp_path / "pids"
    command = [sys.executable, "-c", FAKE_VLLM, str(port), str(pidfile), *extra]
    return ServePlan(command=command, env={}, dtype="float32", served_name="m", url=f"http://127.0.0.1:{port}"), pidfile


def _driver(plan: ServePlan) -> subprocess.Popen:
    """`mteb-vllm serve`'s loop (run_server) in a process of its own, as the CLI runs it."""
    # as the CLI: its own signal handlers first, then mteb, whose native libraries start threads a signal may be
    # delivered to (with those, a main thread blocked in proc.wait() never ran the Python handler)
    code = ("import json, signal, sys\nfrom mteb_vllm.cli import _stop\n"
            "[signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)]\nimport mteb\n"
            "from mteb_vllm.serve import ServePlan, run_server\n"
            "sys.exit(run_server(ServePlan(**json.loads(sys.argv[1]))))")
    fields = {"command": plan.command, "env": plan.env, "dtype": plan.dtype, "served_name": plan.served_name,
              "url": plan.url}
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(fields)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_ready(driver: subprocess.Popen, pidfile: Path, url: str) -> list[int]:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert driver.poll() is None, driver.communicate()
        if pidfile.exists():
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    time.sleep(0.5)  # run_server polls health every 0.2 s, then hands the processes over
                    return [int(p) for p in pidfile.read_text().split()]
            except OSError:
                pass
        time.sleep(0.1)
    raise TimeoutError("the fake server did not come up")


def _gone_within(pids: list[int], seconds: float) -> bool:
    from mteb_vllm.reaper import _alive

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def _port_free(url: str) -> bool:
    """Nobody listens there (SO_REUSEADDR, as servers bind: closed connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            return True
        except OSError:
            return False


def test_kill_9_of_serve_takes_the_server_and_its_engine_processes_with_it(tmp_path):
    """N21: the server runs in its own session; a kill -9 of `mteb-vllm serve` used to leave it serving."""
    plan, pidfile = _fake_plan(tmp_path)
    driver = _driver(plan)
    pids = _wait_ready(driver, pidfile, plan.url)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    try:
        assert _gone_within(pids, 5.0), "the server or its engine process outlived kill -9 of mteb-vllm serve"
        assert _port_free(plan.url)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP, signal.SIGTERM], ids=["INT", "HUP", "TERM"])
def test_the_first_signal_stops_serve_and_its_server(tmp_path, sig):
    """N22: the first Ctrl-C (or SIGHUP when the terminal closes, or SIGTERM) stops the server at once, and the
    message says so (not "finished tasks are saved")."""
    plan, pidfile = _fake_plan(tmp_path)
    driver = _driver(plan)
    pids = _wait_ready(driver, pidfile, plan.url)
    started = time.monotonic()
    os.kill(driver.pid, sig)
    try:
        _, err = driver.communicate(timeout=20)
    finally:
        driver.kill()
    assert time.monotonic() - started < 10
    assert driver.returncode == 128 + sig
    assert f"interrupted ({signal.Signals(sig).name}); stopping the server" in err
    assert "resume" not in err
    assert _gone_within(pids, 5.0) and _port_free(plan.url)


def test_the_servers_own_output_is_shown(tmp_path, capfd):
    """N20: "address already in use" (or any load error) reaches the user, not /dev/null."""
    plan, _ = _fake_plan(tmp_path, "fail")
    assert run_server(plan) == 1
    out, err = capfd.readouterr()
    assert "fake vllm: starting" in out and "address already in use" in err


@pytest.mark.engine
def test_a_real_mteb_vllm_serve_scores_as_the_local_engine_and_leaves_nothing_after_kill_9(minilm_path, tmp_path,
                                                                                           minilm_encoder):
    """The user's fleet path with the real server, started by the CLI: its embeddings equal the local engine's
    (a text over the context included, truncated on the client) and so do the demo tasks' scores, filed under the
    asked precision; then N21: no process of it 5 s after kill -9 of `mteb-vllm serve`, and the port free."""
    import urllib.request

    import mteb
    import numpy as np
    import psutil

    from mteb_vllm import VllmEncoderWrapper, demo_tasks

    port = free_port()
    cli = subprocess.Popen([sys.executable, "-m", "mteb_vllm.cli", "serve", minilm_path, "--port", str(port),
                            "--dtype", "float32"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert cli.poll() is None, cli.communicate()[1][-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                time.sleep(1)
        remote = VllmEncoderWrapper(minilm_path, endpoints=[url], dtype="float32",
                                    model_name="sentence-transformers/all-MiniLM-L6-v2")
        texts = [f"sentence {i} about rivers and {i % 7} towns" for i in range(100)] + ["word " * 400]
        assert np.abs(remote.embed_texts(texts) - minilm_encoder.embed_texts(texts)).max() <= 1e-6
        assert remote.engine.verified  # it reported what it computes (the identity route of `mteb-vllm serve`)
        scores = [{r.task_name: r.get_score() for r in mteb.evaluate(model, demo_tasks(), cache=None,
                                                                      show_progress_bar=False).task_results}
                  for model in (remote, minilm_encoder)]
        assert scores[0] == scores[1]
        assert remote.mteb_model_meta.experiment_kwargs == {"dtype": "float32"}
        time.sleep(1)  # the CLI hands the server's processes to its sidecar when /health answers
        sidecars = {p.pid for p in psutil.Process(cli.pid).children() if "mteb_vllm.reaper" in " ".join(p.cmdline())}
        pids = [p.pid for p in psutil.Process(cli.pid).children(recursive=True) if p.pid not in sidecars]
        assert len(pids) >= 2, pids  # the API server and its engine core
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait()
        assert _gone_within(pids, 5.0), [p for p in pids if psutil.pid_exists(p)]
        assert _port_free(url)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if cli.poll() is None:
            cli.kill()
