"""A fake ``vllm serve``: the HTTP API the remote backend uses, answered by :class:`FakeBackend`.

Why: the remote backend's hard parts are failure handling and load balancing (a server that dies mid-run,
500s, malformed answers, a fleet of 32 servers), and none of that needs a model. This server speaks the same
requests and answers as vLLM 0.32 (``/health``, ``/v1/models``, ``/v1/embeddings`` with token ids and base64
output, ``/classify`` with token ids, ``/score`` with text pairs) and computes with FakeBackend, so its numbers
are a pure function of each input's tokens: any split of the work over any number of servers gives the same
result, bit for bit. It can be slow on purpose (per-token and per-request latency, a capacity limit), fail on
purpose (an error rate, a kill at request N, malformed JSON, NaN, zero or too wide vectors, a hang), serve
another model, report an identity as ``mteb-vllm serve`` does, or demand an API key.

Run one from a test with :class:`FakeServer` (a separate process, so its work does not share the client's GIL,
and so it can really die), or by hand: ``python -m mteb_vllm.testing.fake_server --port 8100 --model m``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from ..backends.protocol import TokenizedInput
from ..serve_identity import IDENTITY_PATH
from .fake_backend import FakeBackend


@dataclass
class FakeServerConfig:
    """What the fake server serves and how it misbehaves."""

    model: str = "fake-model"
    max_model_len: int = 512
    dim: int = 64
    num_labels: int = 1
    seconds_per_token: float = 0.0
    seconds_per_request: float = 0.0
    #: Requests computed at once; more wait (0: no limit). A fixed capacity per server is what makes a fleet
    #: benchmark measure the client, not the machine.
    capacity: int = 0
    error_rate: float = 0.0
    kill_at_request: int | None = None
    malformed: bool = False
    tasks: list[str] = field(default_factory=lambda: ["embed", "classify", "score"])
    #: A Hugging Face tokenizer for /score's text pairs (a folder); default: FakeBackend's byte tokenizer.
    tokenizer: str | None = None
    seed: int = 0
    #: The text of an injected failure's HTTP 500 answer.
    error_message: str = "injected failure"
    #: False: answer a constant vector without computing (fleet simulations, where only the latency matters).
    compute: bool = True
    #: What ``GET /mteb-vllm/identity`` answers, as a server started by ``mteb-vllm serve`` does (None: 404, like
    #: a plain ``vllm serve``).
    identity: dict[str, Any] | None = None
    #: Requests without ``Authorization: Bearer <api_key>`` get HTTP 401, as ``vllm serve --api-key`` answers.
    api_key: str | None = None
    #: Hostile answers from request ``bad_after`` on (the start's canary request is number 1): "nan" (NaN
    #: vectors), "zeros" (all-zero vectors), "wide" (one value more per vector), "hang" (never answers).
    bad: str | None = None
    bad_after: int = 1
    #: The first N requests to the model routes answer HTTP 500 (a server's blip), the later ones work.
    fail_first: int = 0
    #: Every answer multiplied by this (another precision's or another model's small differences).
    scale: float = 1.0


class _State:
    def __init__(self, config: FakeServerConfig):
        self.config = config
        self.backend = FakeBackend(dim=config.dim, num_labels=config.num_labels, max_model_len=config.max_model_len,
                                   tokenizer=config.tokenizer)
        self.requests = 0
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(config.capacity) if config.capacity else None
        self.random = random.Random(config.seed)
        self.released = threading.Event()  # set when a threaded server stops: hung requests end


class _Handler(BaseHTTPRequestHandler):
    state: _State
    protocol_version = "HTTP/1.1"
    # An answer goes out as two writes (headers, then body); with Nagle's algorithm on, the body waits for the
    # client's delayed ACK of the headers (~40 ms on Linux) on every request, as vLLM's server never does.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests read the client's logs
        return

    def _send(self, status: int, body: Any, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        key = self.state.config.api_key
        if key is None or self.path == "/health" or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._send(401, {"error": "Unauthorized"})
        return False

    def do_GET(self) -> None:
        config = self.state.config
        if not self._authorized():
            return
        if self.path == IDENTITY_PATH and config.identity is not None:
            self._send(200, config.identity)
        elif self.path == "/health":
            self._send(200, {})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": config.model, "object": "model", "root": config.model,
                                                         "max_model_len": config.max_model_len}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        state, config = self.state, self.state.config
        length = int(self.headers.get("Content-Length", 0))
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._send(400, {"error": {"message": "invalid JSON"}})
        if not self._authorized():
            return
        with state.lock:
            state.requests += 1
            number = state.requests
            fail = state.random.random() < config.error_rate or number <= config.fail_first
        if config.kill_at_request is not None and number >= config.kill_at_request:
            os._exit(1)  # a crashed server: the connection just drops
        bad = config.bad if config.bad and number >= config.bad_after else None
        if bad == "hang":
            state.released.wait(3600)
            return
        route = {"/v1/embeddings": "embed", "/classify": "classify", "/score": "score"}.get(self.path)
        if route is None:
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        if route not in config.tasks:
            return self._send(400, {"error": {"message": f"The model does not support {route}"}})
        if body.get("model") not in (None, config.model):
            return self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
        if fail:
            return self._send(500, {"error": {"message": config.error_message}})
        if config.malformed:
            return self._send(200, None, raw=b'{"data": [{"index": 0, "embedding": ')
        try:
            items = self._items(route, body)
        except ValueError as exc:
            return self._send(400, {"error": {"message": str(exc)}})
        if state.slots is not None:
            state.slots.acquire()
        try:
            time.sleep(config.seconds_per_request + config.seconds_per_token * sum(len(i) for i in items))
            if config.compute:
                out = state.backend.pool(items, "embed" if route == "embed" else "classify")
            else:
                out = np.ones((len(items), config.dim if route == "embed" else config.num_labels), np.float32)
            out = out * np.float32(config.scale) if config.scale != 1.0 else out
            if bad == "nan":
                out = np.full_like(out, np.nan)
            elif bad == "zeros":
                out = np.zeros_like(out)
            elif bad == "wide":
                out = np.concatenate([out, np.ones((len(out), 1), np.float32)], axis=1)
        finally:
            if state.slots is not None:
                state.slots.release()
        self._send(200, self._answer(route, body, out, sum(len(i) for i in items)))

    def _items(self, route: str, body: dict[str, Any]) -> list[TokenizedInput]:
        config = self.state.config
        if route == "score":
            first, second = body.get("text_1"), body.get("text_2")
            if isinstance(first, str):
                first = [first] * len(second)
            tok = self.state.backend.tokenizer
            enc = tok(first, second, add_special_tokens=True)
            items = [TokenizedInput(ids, types) for ids, types in zip(enc["input_ids"], enc["token_type_ids"])]
        else:
            raw = body.get("input")
            if not isinstance(raw, list) or not raw:
                raise ValueError("input must be a list of token id lists")
            raw = [raw] if isinstance(raw[0], int) else raw
            items = [TokenizedInput(list(ids)) for ids in raw]
        for i, item in enumerate(items):
            if len(item) > config.max_model_len:
                raise ValueError(f"input {i} has {len(item)} tokens, more than max_model_len {config.max_model_len}")
        return items

    def _answer(self, route: str, body: dict[str, Any], out: np.ndarray, tokens: int) -> dict[str, Any]:
        model, usage = self.state.config.model, {"prompt_tokens": tokens, "total_tokens": tokens}
        if route == "embed":
            as_base64 = body.get("encoding_format") == "base64"
            data = [{"index": i, "object": "embedding",
                     "embedding": base64.b64encode(row.astype("<f4").tobytes()).decode() if as_base64
                     else row.tolist()} for i, row in enumerate(out)]
        elif route == "classify":
            data = [{"index": i, "label": None, "probs": row.tolist(), "num_classes": len(row)}
                    for i, row in enumerate(out)]
        else:
            data = [{"index": i, "object": "score", "score": float(row[-1])} for i, row in enumerate(out)]
        return {"object": "list", "model": model, "data": data, "usage": usage}


class _Server(ThreadingHTTPServer):
    # The listen backlog: socketserver's default of 5 drops the connections a client opens at once beyond it
    # (a fleet client opens max_in_flight per endpoint, plus its checks), and a dropped SYN is sent again only
    # after a second; vLLM's server listens with a backlog in the thousands.
    request_queue_size = 1024


def make_server(config: FakeServerConfig, host: str = "127.0.0.1", port: int = 8100) -> ThreadingHTTPServer:
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the fake server only listens on the loopback interface")
    handler = type("Handler", (_Handler,), {"state": _State(config)})
    server = _Server((host, port), handler)
    server.daemon_threads = True
    return server


def serve(config: FakeServerConfig, host: str = "127.0.0.1", port: int = 8100) -> None:
    """Serve until killed (the tests stop it by killing its process)."""
    make_server(config, host, port).serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeServer:
    """A fake server in its own process, on a free loopback port: ``with FakeServer(config) as url: ...``.

    ``threaded=True`` serves from a thread of this process instead (starts in milliseconds, for logic tests;
    not with ``kill_at_request``, which would end this process)."""

    def __init__(self, config: FakeServerConfig | None = None, *, port: int | None = None, start_timeout: float = 60,
                 threaded: bool = False):
        self.config = config or FakeServerConfig()
        if threaded and self.config.kill_at_request is not None:
            raise ValueError("kill_at_request needs a fake server in its own process (threaded=False)")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.threaded = threaded
        self.proc: subprocess.Popen | None = None
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> FakeServer:
        if self.threaded:
            self._server = make_server(self.config, port=self.port)
            # a short poll: shutdown() waits for the loop to look at its flag (0.5 s by default, per server)
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True,
                             name="fake-vllm-serve").start()
            return self
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mteb_vllm.testing.fake_server", "--port", str(self.port), "--config",
             json.dumps(asdict(self.config))], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake server exited: {self.proc.stderr.read().decode()[-1000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"fake server on {self.url} did not come up in {self.start_timeout} s")

    def stop(self) -> None:
        if self._server is not None:
            self._server.RequestHandlerClass.state.released.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def alive(self) -> bool:
        return self._server is not None or (self.proc is not None and self.proc.poll() is None)

    def __enter__(self) -> str:
        self.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake vllm serve for tests and fleet simulations (loopback only)")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--config", default="{}", help="FakeServerConfig fields as JSON")
    parser.add_argument("--model")
    args = parser.parse_args(argv)
    fields = json.loads(args.config)
    if args.model:
        fields["model"] = args.model
    serve(FakeServerConfig(**fields), port=args.port)


if __name__ == "__main__":
    main()
