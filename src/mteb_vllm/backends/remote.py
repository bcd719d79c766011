"""``RemoteBackend``: a fleet of ``vllm serve`` endpoints as one :class:`~mteb_vllm.backends.base.Backend`.

Why a client and not our own distributed engine: people who evaluate big models already deploy vLLM's server
(one per node, ``-dp`` over its GPUs, perhaps behind a router). What they lack is a client that keeps a fleet
busy and gives the same numbers as a local run. mteb's own OpenAI-API wrappers send one blocking batch of 32
texts at a time to one URL.

What this backend does, and what stays in the wrappers: prompts, tokenization, truncation, deduplication, NaN
checks and the results' metadata are the wrappers' (so a fleet computes exactly what the local engine
computes). This backend only moves token ids:

- embeddings: ``POST /v1/embeddings`` with token ids, answers as base64 float32;
- LLM rerankers (a score template; the whole prompt is one token sequence): ``POST /classify`` with token ids;
- BERT-style cross-encoders (two segments): ``POST /score`` with the two texts *as far as their tokens survived
  our truncation* (``TokenizedInput.pair``), since vLLM's HTTP API takes segment ids only from text pairs;
  re-tokenized by the server they are exactly our token ids.

Requests are batches of at most :attr:`RemoteOptions.batch_tokens` tokens, each sent to the live endpoint with
the fewest requests outstanding (at most :attr:`RemoteOptions.max_in_flight` each), and reassembled by index. A
connection error, timeout, HTTP 5xx or an answer that is not the expected JSON is retried on another endpoint
with exponential backoff; an endpoint that fails :attr:`RemoteOptions.eject_after` times in a row is taken out
(logged) and the others finish the work. A 4xx answer is the request's fault, not the endpoint's: it is raised
at once with the server's message.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ..errors import MtebVllmError, UsageError
from ..precision import canonical
from .base import BackendInfo, PoolingTask, TokenizedInput

logger = logging.getLogger(__name__)


class RemoteEndpointError(MtebVllmError, ConnectionError):
    """The fleet cannot do the work: every endpoint is down or was taken out, or one serves something else."""


@dataclass(frozen=True)
class RemoteOptions:
    """How the client loads the fleet (the defaults keep a vLLM server's scheduler full without queueing long).

    ``batch_tokens``/``batch_inputs`` bound one request; ``max_in_flight`` is per endpoint; ``timeout`` is per
    request (``connect_timeout`` for the connection alone); a batch is tried ``attempts`` times in all.
    """

    batch_tokens: int = 16_384
    batch_inputs: int = 512
    max_in_flight: int = 4
    timeout: float = 300.0
    connect_timeout: float = 10.0
    attempts: int = 5
    eject_after: int = 3
    backoff: float = 0.25
    max_backoff: float = 8.0

    def __post_init__(self) -> None:
        for name in ("batch_tokens", "batch_inputs", "max_in_flight", "attempts", "eject_after"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"RemoteOptions.{name} must be at least 1, got {getattr(self, name)!r}")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise UsageError("RemoteOptions timeouts must be positive")


@dataclass
class Endpoint:
    """One server, as the client sees it."""

    url: str
    served: str = ""
    max_model_len: int | None = None
    outstanding: int = 0
    failures: int = 0
    ejected: bool = False
    reason: str = ""
    done: int = 0


@dataclass
class _Batch:
    indices: list[int]
    attempt: int = 0
    avoid: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Problem:
    """Why an endpoint is not used: ``wrong`` (it serves another model or cannot do this job: an error) or not
    (down or failing now: it is left out and the others carry on)."""

    text: str
    wrong: bool = False


class _Transient(Exception):
    """A failure worth retrying on another endpoint."""


def check_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"endpoint {url!r} is not an http(s) URL such as http://127.0.0.1:8000")
    return url.rstrip("/")


def _run(coro: Any) -> Any:
    """Run a coroutine from synchronous code, also when the caller already runs an event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="mteb-vllm-remote")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


class RemoteBackend:
    """Token ids in, vectors and scores out, from ``vllm serve`` endpoints (see the module docstring).

    Args:
        config: The wrapper's :class:`~mteb_vllm.config.EngineConfig` (model, revision, max length, template).
        endpoints: Base URLs, e.g. ``["http://node1:8000", "http://node2:8000"]``.
        lazy: Contact the endpoints at the first call instead of now.
        options: :class:`RemoteOptions`.

    ``dtype``: the servers do not report their precision. With an explicit ``dtype`` that is what the results
    record (start the servers with the same, ``mteb-vllm serve`` prints it); with "auto" they record "served".
    """

    kind = "remote"

    def __init__(self, config: Any, *, endpoints: list[str], lazy: bool = False,
                 options: RemoteOptions | None = None):
        if not endpoints:
            raise UsageError("the remote backend needs at least one endpoint URL")
        self.config = config
        self.options = options or RemoteOptions()
        self.endpoints = [Endpoint(check_url(u)) for u in dict.fromkeys(endpoints)]
        self.model = config.model
        requested = canonical(config.dtype or "auto")
        self.dtype = "served" if requested == "auto" else requested
        self._tokenizer = None
        self._checked = False
        self._lock = threading.Lock()
        self._tls: Any = None  # one TLS context for every client (building one costs ~20 ms of CPU)
        self.requests_sent = 0
        self.inputs_sent = 0
        self.revision = self._revision()
        self.max_model_len = self._expected_max_len()
        if not lazy or self.max_model_len is None:
            self.check()

    # --- what the servers must be ------------------------------------------------------------------------
    def _revision(self) -> str | None:
        from ..model_config import hub_commit, is_local_path, local_revision

        if is_local_path(self.config.model):
            return local_revision(self.config.model)
        return hub_commit(self.config.model, self.config.revision) or self.config.revision

    def _expected_max_len(self) -> int | None:
        """The context the local engine would use (so a fleet truncates as a local run does)."""
        from ..model_config import model_context_length

        if self.config.max_model_len:
            return int(self.config.max_model_len)
        length = model_context_length(self.config.model, trust_remote_code=bool(self.config.trust_remote_code),
                                      revision=self.config.revision)
        template = self.config.score_template
        if template is not None and template.max_length and length:
            length = min(length, template.max_length)
        return length

    @property
    def capacity(self) -> tuple[int, int]:
        """(inputs, tokens) the live endpoints hold in flight at once. A caller that hands work over in pieces
        (the cache commits piece by piece) makes each piece at least this large, or endpoints sit idle."""
        live = sum(1 for e in self.endpoints if not e.ejected) or 1
        o = self.options
        return live * o.max_in_flight * o.batch_inputs, live * o.max_in_flight * o.batch_tokens

    @property
    def route(self) -> str:
        """The server API this backend's inputs go to."""
        if self.config.convert != "classify":
            return "embed"
        return "classify" if self.config.score_template is not None else "score"

    def check(self) -> None:
        """Ask every endpoint what it serves and whether it can do this model's job; say clearly if not."""
        if self._checked:
            return
        _run(self._check_all())
        self._checked = True

    async def _check_all(self) -> None:
        import httpx

        timeout = httpx.Timeout(self.options.connect_timeout * 3, connect=self.options.connect_timeout)
        async with httpx.AsyncClient(timeout=timeout) as client:
            problems = await asyncio.gather(*(self._check_one(client, e) for e in self.endpoints))
        live = [e for e, p in zip(self.endpoints, problems) if p is None]
        down = [f"{e.url}: {p.text}" for e, p in zip(self.endpoints, problems) if p is not None]
        wrong = [f"{e.url}: {p.text}" for e, p in zip(self.endpoints, problems) if p is not None and p.wrong]
        if wrong:
            raise RemoteEndpointError("endpoint(s) not usable for " + self.config.model + ": " + "; ".join(wrong))
        if not live:
            raise RemoteEndpointError("no endpoint answers: " + "; ".join(down) + ". Start servers with "
                                      "`mteb-vllm serve MODEL` and check the URLs and ports")
        for text in down:
            logger.warning("endpoint left out: %s", text)
        for e, p in zip(self.endpoints, problems):
            if p is not None:
                e.ejected, e.reason = True, p.text
        lengths = {e.max_model_len for e in live if e.max_model_len}
        if len(lengths) > 1:
            raise RemoteEndpointError(f"the endpoints serve {self.config.model} with different context lengths "
                                      f"{sorted(lengths)}; start them with the same --max-model-len")
        served = lengths.pop() if lengths else None
        if served is not None:
            if self.max_model_len is None:
                self.max_model_len = served
            elif served < self.max_model_len:
                if self.config.max_model_len:
                    raise RemoteEndpointError(
                        f"the endpoints serve max_model_len {served}, less than the {self.max_model_len} asked "
                        "for; restart them with --max-model-len or ask for less")
                logger.warning("the endpoints serve %s with max_model_len %d; a local run would use %d. Inputs "
                               "are truncated to %d, so long inputs may score differently from a local run "
                               "(start servers with `mteb-vllm serve` to match it)", self.config.model, served,
                               self.max_model_len, served)
                self.max_model_len = served

    async def _check_one(self, client: Any, endpoint: Endpoint) -> _Problem | None:
        import httpx

        try:
            response = await client.get(f"{endpoint.url}/v1/models")
            response.raise_for_status()
            cards = response.json().get("data") or []
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            return _Problem(f"not reachable ({_reason(exc)})")
        names = {str(c.get(k)) for c in cards for k in ("id", "root") if c.get(k)}
        if not _same_model(self.config.model, names):
            return _Problem(f"serves {sorted(names) or 'nothing'}, not {self.config.model}", wrong=True)
        endpoint.served = str(cards[0].get("id"))
        endpoint.max_model_len = next((int(c["max_model_len"]) for c in cards if c.get("max_model_len")), None)
        return await self._probe(client, endpoint)

    async def _probe(self, client: Any, endpoint: Endpoint) -> _Problem | None:
        """One tiny request of the kind this backend will send; None when the endpoint answers it.

        A 4xx answer means the server cannot do this job ("cannot ..."); no answer or a 5xx means it is not well
        now, and it is left out like a server that is down."""
        path, body = self._request(endpoint, [TokenizedInput([1, 2], pair=("a", "b") if self.route == "score"
                                                             else None)])
        try:
            response = await client.post(f"{endpoint.url}{path}", json=body)
        except Exception as exc:
            return _Problem(f"not answering {path} ({_reason(exc)})")
        if response.status_code >= 500:
            return _Problem(f"failing on {path} (HTTP {response.status_code}: {response.text[:200]})")
        if response.status_code >= 400:
            what = {"embed": "embed (is it a pooling/embedding model? start it with `mteb-vllm serve`)",
                    "classify": "score with the reranker's template head (start it with `mteb-vllm serve "
                                "--template ...` so it has the yes/no score head)",
                    "score": "score pairs (no classification head? start it with `mteb-vllm serve --task "
                             "classify`)"}[self.route]
            return _Problem(f"cannot {what}: HTTP {response.status_code} {response.text[:200]}", wrong=True)
        try:
            self._parse(response.json(), 1)
        except (ValueError, KeyError, TypeError, _Transient) as exc:
            return _Problem(f"answering {path} with something else than vLLM's format ({_reason(exc)})")
        return None

    # --- requests ----------------------------------------------------------------------------------------
    def _request(self, endpoint: Endpoint, items: list[TokenizedInput]) -> tuple[str, dict[str, Any]]:
        model = endpoint.served or self.config.model
        if self.route == "embed":
            return "/v1/embeddings", {"model": model, "input": [i.token_ids for i in items],
                                      "encoding_format": "base64"}
        if self.route == "classify":
            return "/classify", {"model": model, "input": [i.token_ids for i in items]}
        missing = [n for n, i in enumerate(items) if i.pair is None]
        if missing:
            raise UsageError("pairs for a remote cross-encoder must carry their texts (TokenizedInput.pair); "
                             "they come from mteb_vllm.tokenizing.tokenize_pairs")
        return "/score", {"model": model, "text_1": [i.pair[0] for i in items],
                          "text_2": [i.pair[1] for i in items]}

    def _parse(self, payload: Any, count: int) -> list[np.ndarray]:
        data = payload["data"]
        if not isinstance(data, list) or len(data) != count:
            raise _Transient(f"expected {count} results, got {len(data) if isinstance(data, list) else data!r}")
        key = {"embed": "embedding", "classify": "probs", "score": "score"}[self.route]
        values: list[Any] = [None] * count
        for entry in data:
            values[int(entry["index"])] = entry[key]
        if any(v is None for v in values):
            raise _Transient("an answer is missing an index")
        if self.route == "score":
            return [np.asarray([v], dtype=np.float32) for v in values]
        if self.route == "embed" and all(isinstance(v, str) for v in values):
            return _decode_base64_rows(values)
        return [np.asarray(v, dtype=np.float32) for v in values]

    def _batches(self, inputs: list[TokenizedInput]) -> list[_Batch]:
        batches, current, tokens = [], [], 0
        for i, item in enumerate(inputs):
            if current and (len(current) >= self.options.batch_inputs or
                            tokens + len(item) > self.options.batch_tokens):
                batches.append(_Batch(current))
                current, tokens = [], 0
            current.append(i)
            tokens += len(item)
        if current:
            batches.append(_Batch(current))
        return batches

    # --- the Backend protocol ------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from ..model_config import load_tokenizer

            self._tokenizer = load_tokenizer(self.config.model, self.config.revision,
                                             trust_remote_code=bool(self.config.trust_remote_code))
        return self._tokenizer

    @property
    def info(self) -> BackendInfo:
        live = [e.url for e in self.endpoints if not e.ejected]
        return BackendInfo(kind=self.kind, model=self.model, revision=self.revision, dtype=self.dtype,
                           max_model_len=int(self.max_model_len or 0),
                           details={"endpoints": len(self.endpoints), "live": len(live), "route": self.route})

    @property
    def started(self) -> bool:
        return self._checked

    def start(self) -> None:
        self.check()

    def pool(self, inputs: list[TokenizedInput], task: PoolingTask, *, desc: str = "") -> np.ndarray:
        if not inputs:
            return np.zeros((0, 0), dtype=np.float32)
        with self._lock:
            self.check()
            too_long = [i for i, item in enumerate(inputs) if self.max_model_len and len(item) > self.max_model_len]
            if too_long:
                raise UsageError(f"{len(too_long)} input(s) are longer than the endpoints' max_model_len "
                                 f"{self.max_model_len}; the wrapper truncates to the backend's max_model_len")
            rows = _run(self._pool(inputs, desc))
        return np.stack([r.reshape(-1) for r in rows]).astype(np.float32, copy=False)

    async def _pool(self, inputs: list[TokenizedInput], desc: str) -> list[np.ndarray]:
        import httpx
        from tqdm.auto import tqdm

        options = self.options
        pending = self._batches(inputs)
        results: list[np.ndarray | None] = [None] * len(inputs)
        # One client (connection pool) per endpoint: a shared pool scans every connection of the fleet for each
        # request it sends or finishes, which at 32 endpoints cost as much CPU as the JSON encoding.
        limits = httpx.Limits(max_connections=options.max_in_flight, max_keepalive_connections=options.max_in_flight)
        timeout = httpx.Timeout(options.timeout, connect=options.connect_timeout)
        wake = asyncio.Event()
        running: set[asyncio.Task] = set()
        failure: list[BaseException] = []
        show = bool(desc) and not os.environ.get("MTEB_VLLM_NO_PROGRESS")
        started, tokens_done = time.perf_counter(), 0

        async with contextlib.AsyncExitStack() as stack:
            if self._tls is None:
                self._tls = httpx.create_ssl_context()
            clients = {e.url: await stack.enter_async_context(
                httpx.AsyncClient(timeout=timeout, limits=limits, verify=self._tls)) for e in self.endpoints}
            with tqdm(total=len(inputs), desc=desc or "remote", unit="text", disable=not show,
                      dynamic_ncols=True) as bar:

                async def send(endpoint: Endpoint, batch: _Batch) -> None:
                    nonlocal tokens_done
                    items = [inputs[i] for i in batch.indices]
                    try:
                        rows = await self._send(clients[endpoint.url], endpoint, items)
                    except _Transient as exc:
                        self._failed(endpoint, exc)
                        batch.attempt += 1
                        batch.avoid.add(endpoint.url)
                        if batch.attempt >= options.attempts:
                            failure.append(RemoteEndpointError(
                                f"a batch of {len(items)} inputs failed {batch.attempt} times; last: "
                                f"{endpoint.url}: {exc}"))
                        else:
                            await asyncio.sleep(min(options.max_backoff, options.backoff * 2 ** (batch.attempt - 1)))
                            pending.append(batch)
                    except BaseException as exc:  # a 4xx answer or a bug: not worth retrying
                        failure.append(exc)
                    else:
                        endpoint.failures = 0
                        endpoint.done += 1
                        for i, row in zip(batch.indices, rows):
                            results[i] = row
                        tokens_done += sum(len(item) for item in items)
                        bar.update(len(items))
                        rate = tokens_done / max(time.perf_counter() - started, 1e-9)
                        bar.set_postfix(tok_s=f"{rate:,.0f}", refresh=False)
                    finally:
                        endpoint.outstanding -= 1
                        wake.set()

                while (pending or running) and not failure:
                    live = [e for e in self.endpoints if not e.ejected]
                    if not live:
                        reasons = "; ".join(f"{e.url}: {e.reason}" for e in self.endpoints)
                        failure.append(RemoteEndpointError(f"every endpoint was taken out ({reasons})"))
                        break
                    dispatched = False
                    while pending:
                        batch = pending[0]
                        choices = [e for e in live if e.outstanding < options.max_in_flight]
                        preferred = [e for e in choices if e.url not in batch.avoid] or choices
                        if not preferred:
                            break
                        endpoint = min(preferred, key=lambda e: (e.outstanding, e.done))
                        pending.pop(0)
                        endpoint.outstanding += 1
                        self.requests_sent += 1
                        self.inputs_sent += len(batch.indices)
                        task = asyncio.ensure_future(send(endpoint, batch))
                        running.add(task)
                        task.add_done_callback(running.discard)
                        dispatched = True
                    if not dispatched or not pending:
                        wake.clear()
                        if running:
                            try:
                                await asyncio.wait_for(wake.wait(), timeout=1.0)
                            except asyncio.TimeoutError:
                                pass
                        elif pending:
                            await asyncio.sleep(0.05)
                for task in list(running):
                    task.cancel()
                if running:
                    await asyncio.gather(*running, return_exceptions=True)
        if failure:
            raise failure[0]
        return results  # type: ignore[return-value]

    async def _send(self, client: Any, endpoint: Endpoint, items: list[TokenizedInput]) -> list[np.ndarray]:
        import httpx

        path, body = self._request(endpoint, items)
        try:
            response = await client.post(f"{endpoint.url}{path}", json=body)
        except httpx.HTTPError as exc:
            raise _Transient(_reason(exc)) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise _Transient(f"HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code >= 400:
            raise RemoteEndpointError(f"{endpoint.url}{path} refused a request: HTTP {response.status_code}: "
                                      f"{response.text[:500]}")
        try:
            return self._parse(response.json(), len(items))
        except (ValueError, KeyError, TypeError) as exc:
            raise _Transient(f"malformed answer ({_reason(exc)}): {response.text[:120]!r}") from exc

    def _failed(self, endpoint: Endpoint, exc: BaseException) -> None:
        endpoint.failures += 1
        endpoint.reason = str(exc)
        if endpoint.failures >= self.options.eject_after and not endpoint.ejected:
            endpoint.ejected = True
            live = sum(1 for e in self.endpoints if not e.ejected)
            logger.warning("endpoint %s taken out after %d failures in a row (%s); %d endpoint(s) go on",
                           endpoint.url, endpoint.failures, exc, live)
        else:
            logger.info("endpoint %s failed (%s); retrying elsewhere", endpoint.url, exc)

    def close(self) -> None:
        """Nothing to release: connections live only inside a call."""


def _decode_base64_rows(values: list[str]) -> list[np.ndarray]:
    """Base64 float32 embeddings as rows of one array: one ``frombuffer`` per answer, not one per row.

    Why: at fleet rates the client decodes tens of thousands of rows a second on the same cores it builds
    requests on, and per-row ``b64decode``/``frombuffer`` calls were a fifth of its CPU time
    (``benchmarks/fleet_scaling.py``). Rows of different sizes are a malformed answer, never reshaped.
    """
    raw = [binascii.a2b_base64(v) for v in values]
    size = len(raw[0])
    if size == 0 or size % 4 or any(len(r) != size for r in raw):
        raise _Transient(f"embeddings of different or invalid byte sizes ({sorted({len(r) for r in raw})[:4]})")
    return list(np.frombuffer(b"".join(raw), dtype="<f4").reshape(len(raw), size // 4))


def _same_model(model: str, served: set[str]) -> bool:
    """The model an endpoint serves is ours: the same id, or, when one side is a local folder (a copy served by
    path), the same folder name. Two hub ids must be equal: ``orgA/model`` is not ``orgB/model``."""
    def tail(name: str) -> str:
        return os.path.basename(os.path.normpath(name)).lower()

    def is_path(name: str) -> bool:
        return name.startswith(("/", ".", "~")) or os.path.isdir(name)

    if model.lower() in {s.lower() for s in served}:
        return True
    return any((is_path(model) or is_path(s)) and tail(model) == tail(s) for s in served)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
