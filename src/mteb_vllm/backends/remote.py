"""``RemoteBackend``: a fleet of ``vllm serve`` endpoints as one :class:`~mteb_vllm.backends.protocol.Backend`.

Why a client and not our own distributed engine: people who evaluate big models already deploy vLLM's server
(one per node, ``-dp`` over its GPUs, perhaps behind a router). What they lack is a client that keeps a fleet
busy and gives the same numbers as a local run. mteb's own OpenAI-API wrappers send one blocking batch of 32
texts at a time to one URL.

What this backend does, and what stays in the wrappers: prompts, tokenization, truncation, deduplication and the
results' metadata are the wrappers' (so a fleet computes exactly what the local engine computes). This backend
only moves token ids:

- embeddings: ``POST /v1/embeddings`` with token ids, answers as base64 float32;
- LLM rerankers (a score template; the whole prompt is one token sequence): ``POST /classify`` with token ids;
- BERT-style cross-encoders (two segments): ``POST /score`` with the two texts *as far as their tokens survived
  our truncation* (``TokenizedInput.pair``), since vLLM's HTTP API takes segment ids only from text pairs;
  re-tokenized by the server they are exactly our token ids.

**What the fleet computes.** At the start every endpoint is asked what it serves (``/v1/models``), what it
computes (``/mteb-vllm/identity``, answered by servers started with ``mteb-vllm serve``: weights revision,
precision, pooling, ... see :mod:`mteb_vllm.serve_identity`) and for its vector of one fixed canary input.
Endpoints must agree: equal identities, and canary vectors equal within the precision's tolerance (this is also
the whole check for servers that report no identity), of the width the model pools to when that is known.
Endpoints that disagree, serve other weights, or compute in another precision than an explicit ``dtype`` are
refused with an error naming them. The backend's ``dtype`` is the precision the servers report; for a fleet
that reports none it is the ``dtype`` the caller gave (or "unknown"), and :attr:`BackendInfo.details
<mteb_vllm.backends.protocol.BackendInfo>` carry a ``results_marker`` so its results are filed apart.

**Failures.** Requests are batches of at most :attr:`RemoteOptions.batch_tokens` tokens, each sent to the live
endpoint with the fewest requests outstanding (at most :attr:`RemoteOptions.max_in_flight` each), and
reassembled by index. A connection error, HTTP 5xx, an answer that is not the expected JSON, and an answer
that is garbage (NaN/Inf, an all-zero vector, another width) is retried on another endpoint with backoff; the
garbage is never returned. An endpoint that fails :attr:`RemoteOptions.eject_after` times in a row, or whose
request timed out, is taken out; it is checked again (the start's check, canary included) with growing delays
and re-admitted when it passes, and a fleet with every endpoint out waits
:attr:`RemoteOptions.outage_wait` seconds for one to come back before the call fails. A 4xx answer is the
request's fault, not the endpoint's: it is raised at once with the server's message.

**Credentials.** An API key (:attr:`RemoteOptions.api_key`, from ``MTEB_VLLM_API_KEY`` or ``VLLM_API_KEY``,
the variable ``vllm serve`` reads its own key from) is sent as ``Authorization: Bearer``; credentials in a URL
(``http://user:password@host``) are sent as HTTP basic auth. Neither is ever printed: endpoints are named
without them, and server or library messages are scrubbed of them.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ..errors import MtebVllmError, UnsupportedModelError, UsageError
from ..identity import weights_revision
from ..precision import canonical
from ..serve_identity import IDENTITY_PATH, SCHEMA, computes, fleet_marker
from .protocol import BackendInfo, BaseBackend, PoolingTask, TokenizedInput

logger = logging.getLogger(__name__)

#: The canary: one fixed input every endpoint is asked for at the start (and at every re-admission).
CANARY_TEXT = "mteb-vllm canary: the river flows past the old mill towards the sea."
CANARY_QUERY = "where does the river flow?"
#: How far two endpoints' canary answers may differ, relative to the answer's largest value (scores in [0, 1]
#: absolutely). float32 servers agree to rounding; MiniLM's canary in bfloat16 differs from float32 by 1.2e-2
#: (in-process engines, this repo's AMX machine), so float32's bound refuses a bfloat16 server, and half
#: precision's bound leaves room for bfloat16 servers on different hardware.
CANARY_TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 5e-2}
#: For a precision nobody reported (servers without identity, no explicit dtype): the loosest.
UNKNOWN_DTYPE = "unknown"


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a number of seconds") from None


def _env_key() -> str | None:
    return os.environ.get("MTEB_VLLM_API_KEY") or os.environ.get("VLLM_API_KEY") or None


class RemoteEndpointError(MtebVllmError, ConnectionError):
    """The fleet cannot do the work: every endpoint is down or was taken out, or one serves something else."""


#: Why a model whose sentence-transformers pooling vLLM does not compute cannot run on a fleet.
_TOKEN_PATH_REFUSAL = ("{model}: its sentence-transformers pooling is one vLLM does not compute, so every token's "
                       "hidden state is needed, which the fleet client does not fetch; evaluate it with the local "
                       "engine")


@dataclass(frozen=True)
class RemoteOptions:
    """How the client loads the fleet (the defaults keep a vLLM server's scheduler full without queueing long).

    ``batch_tokens``/``batch_inputs`` bound one request; ``max_in_flight`` is per endpoint. ``read_timeout``
    (default ``$MTEB_VLLM_READ_TIMEOUT`` or 120 s) bounds the wait for one answer and ``connect_timeout``
    (``$MTEB_VLLM_CONNECT_TIMEOUT`` or 10 s) for a connection; an endpoint whose request timed out is taken out
    at once. A batch is tried ``attempts`` times in all; start checks ``probe_attempts`` times. A fleet with
    every endpoint out waits ``outage_wait`` seconds for one to pass its check again. ``api_key`` (default
    ``$MTEB_VLLM_API_KEY``, else ``$VLLM_API_KEY``) goes out as ``Authorization: Bearer``; it is never shown.
    """

    batch_tokens: int = 16_384
    batch_inputs: int = 512
    max_in_flight: int = 4
    read_timeout: float = field(default_factory=lambda: _env_float("MTEB_VLLM_READ_TIMEOUT", 120.0))
    connect_timeout: float = field(default_factory=lambda: _env_float("MTEB_VLLM_CONNECT_TIMEOUT", 10.0))
    attempts: int = 5
    eject_after: int = 3
    backoff: float = 0.25
    max_backoff: float = 8.0
    probe_attempts: int = 3
    outage_wait: float = 120.0
    readmit_delay: float = 1.0
    max_readmit_delay: float = 30.0
    api_key: str | None = field(default_factory=_env_key, repr=False)

    def __post_init__(self) -> None:
        for name in ("batch_tokens", "batch_inputs", "max_in_flight", "attempts", "eject_after", "probe_attempts"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"RemoteOptions.{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("read_timeout", "connect_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise UsageError(f"RemoteOptions.{name} must be a positive number of seconds, got {value!r}")
        if self.outage_wait < 0:
            raise UsageError(f"RemoteOptions.outage_wait must not be negative, got {self.outage_wait!r}")

    @property
    def probe_timeout(self) -> float:
        """Read timeout of the start and re-admission checks (tiny requests; a hung server must not stall)."""
        return min(self.read_timeout, 30.0)


@dataclass
class Endpoint:
    """One server, as the client sees it. ``url`` is the base URL without credentials (requests go there, and
    httpx logs it); a user name and password given in the URL are sent as ``auth``; ``name`` is the URL as given
    with them masked, for every message."""

    url: str
    name: str = ""
    auth: tuple[str, str] | None = field(default=None, repr=False)
    served: str = ""
    max_model_len: int | None = None
    outstanding: int = 0
    failures: int = 0
    ejected: bool = False
    reason: str = ""
    done: int = 0
    identity: dict[str, Any] | None = None
    canary: np.ndarray | None = None
    #: Why it is never used again (it computes something else than the fleet); empty while it may come back.
    refused: str = ""
    retry_at: float = 0.0
    readmit_delay: float = 0.0
    checking: bool = False
    check_reason: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or display_url(self.url)
        parsed = urlparse(self.url)
        if parsed.username is not None or parsed.password is not None:
            from urllib.parse import unquote

            self.auth = (unquote(parsed.username or ""), unquote(parsed.password or ""))
            host = parsed.hostname or ""
            host = f"[{host}]" if ":" in host else host
            self.url = parsed._replace(netloc=host + (f":{parsed.port}" if parsed.port else "")).geturl()


@dataclass
class _Batch:
    indices: list[int]
    attempt: int = 0
    avoid: set[str] = field(default_factory=set)
    garbage: int = 0


@dataclass(frozen=True)
class _Problem:
    """Why an endpoint is not used: ``wrong`` (it serves another model, computes something else, or cannot do
    this job: an error) or not (down or failing now: it is left out, the others carry on, and it is checked
    again later)."""

    text: str
    wrong: bool = False


class _Transient(Exception):
    """A failure worth retrying on another endpoint. ``timeout``: the endpoint may hang (taken out at once);
    ``garbage``: it answered with values that cannot be the model's (NaN/Inf, zeros, another width)."""

    def __init__(self, text: str, *, timeout: bool = False, garbage: bool = False):
        super().__init__(text)
        self.timeout = timeout
        self.garbage = garbage


def display_url(url: str) -> str:
    """``url`` without the user name and password it may carry (for messages)."""
    parsed = urlparse(url)
    if parsed.username is None and parsed.password is None:
        return url
    host = parsed.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = "***@" + host + (f":{parsed.port}" if parsed.port else "")
    return parsed._replace(netloc=netloc).geturl()


def check_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"endpoint {display_url(url)!r} is not an http(s) URL such as http://127.0.0.1:8000")
    return url.rstrip("/")


@functools.lru_cache(maxsize=1)
def _tls_context() -> Any:
    """One TLS context for every client of the process: building one reads the CA bundle (~20 ms of CPU), and a
    wrapper builds a client per check and per call. The context holds no per-connection state."""
    import httpx

    return httpx.create_ssl_context()


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


class RemoteBackend(BaseBackend):
    """Token ids in, vectors and scores out, from ``vllm serve`` endpoints (see the module docstring).

    Args:
        config: The wrapper's :class:`~mteb_vllm.config.EngineConfig` (model, revision, max length, template).
        endpoints: Base URLs, e.g. ``["http://node1:8000", "http://node2:8000"]``.
        lazy: Contact the endpoints at the first call instead of now.
        options: :class:`RemoteOptions`.

    ``dtype``: the precision the endpoints report (servers started by ``mteb-vllm serve``); an explicit
    ``config.dtype`` must match it. Servers that report nothing: the explicit ``dtype`` (unverified), else
    "unknown"; their results carry ``results_marker``. Before the endpoints were asked it is "auto".
    """

    kind = "remote"

    def __init__(self, config: Any, *, endpoints: list[str], lazy: bool = False,
                 options: RemoteOptions | None = None):
        if not endpoints:
            raise UsageError("the remote backend needs at least one endpoint URL")
        if options is not None and not isinstance(options, RemoteOptions):
            raise UsageError(f"remote options must be a RemoteOptions, not {type(options).__name__}")
        pooler = config.pooler_config if isinstance(config.pooler_config, dict) else {}
        if pooler.get("task") == "token_embed":  # refused before any server is asked, not at the first encode
            raise UnsupportedModelError(_TOKEN_PATH_REFUSAL.format(model=config.model))
        self.config = config
        self.options = options or RemoteOptions()
        self.endpoints = [Endpoint(check_url(u)) for u in dict.fromkeys(endpoints)]
        self.model = config.model
        self.requested_dtype = canonical(config.dtype or "auto")
        self.dtype = "auto"  # until the endpoints said what they compute
        self._tokenizer = None
        self._checked = False
        self._closed = False
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.inputs_sent = 0
        self.revision = weights_revision(self.config.model, self.config.revision)
        self.max_model_len = self._expected_max_len()
        self.width: int | None = None
        self.identity: dict[str, Any] | None = None  # what every endpoint reported (None: none reports)
        self.marker = ""
        self.verified = False
        self._reference: np.ndarray | None = None
        if not lazy or self.max_model_len is None:
            self.check()

    # --- secrets -------------------------------------------------------------------------------------------
    def _secrets(self) -> list[str]:
        found = [self.options.api_key] if self.options.api_key else []
        for e in self.endpoints:
            if e.auth:
                from urllib.parse import quote

                found += [s for s in e.auth if s] + [quote(s, safe="") for s in e.auth if s]
        return sorted(set(found), key=len, reverse=True)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text

    def _reason(self, exc: BaseException) -> str:
        return self._scrub(_reason(exc))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.options.api_key}"} if self.options.api_key else {}

    # --- what the servers must be ------------------------------------------------------------------------
    def _expected_max_len(self) -> int | None:
        """The context the local engine would use (so a fleet truncates as a local run does)."""
        from ..checkpoint import context_length

        return context_length(self.config.model, self.config.revision,
                              trust_remote_code=bool(self.config.trust_remote_code),
                              requested=self.config.max_model_len, template=self.config.score_template)

    def _expected_width(self) -> int | None:
        """The width the engine pools to, when it is sure: the hidden size, for a model whose sentence-transformers
        pooling the engine computes (the wrapper runs the modules after it). None for scores, for a pooling the
        caller chose, or when the config does not say."""
        from ..checkpoint import config_json

        pooler = self.config.pooler_config
        if self.route != "embed" or not (isinstance(pooler, dict) and pooler.get("task") == "embed"):
            return self._width_from_files()
        config = config_json(self.config.model, self.config.revision) or {}
        hidden = config.get("hidden_size") or (config.get("text_config") or {}).get("hidden_size")
        return int(hidden) if isinstance(hidden, int) else None

    def _width_from_files(self) -> int | None:
        """Without the wrapper's pooling (a backend built directly): a sentence-transformers model of Transformer,
        Pooling (and Normalize) modules pools to its hidden size."""
        import json

        from ..checkpoint import config_json, hub_file, read_json_file

        if self.route != "embed" or self.config.pooler_config is not None:
            return None
        try:
            path = hub_file(self.config.model, "modules.json", self.config.revision)
            if path is None:
                return None
            with open(path, encoding="utf-8") as fh:
                modules = json.load(fh)
            if not isinstance(modules, list):
                return None
            kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
            if sorted(set(kinds) - {"Normalize"}) != ["Pooling", "Transformer"]:
                return None
            pooling = next(m for m in modules if str(m.get("type", "")).endswith("Pooling"))
            pooling_config = read_json_file(self.config.model, f"{pooling.get('path', '')}/config.json",
                                            self.config.revision) or {}
            modes = [k for k, v in pooling_config.items() if k.startswith("pooling_mode_") and v]
            if modes not in (["pooling_mode_mean_tokens"], ["pooling_mode_cls_token"], ["pooling_mode_lasttoken"]):
                return None
            config = config_json(self.config.model, self.config.revision) or {}
            hidden = config.get("hidden_size") or (config.get("text_config") or {}).get("hidden_size")
            width = pooling_config.get("word_embedding_dimension")
            return int(hidden) if hidden and (width is None or int(width) == int(hidden)) else None
        except Exception:  # any doubt: no expectation, the endpoints must still agree with each other
            logger.debug("pooled width of %s not known", self.config.model, exc_info=True)
            return None

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

    def _canary(self) -> TokenizedInput:
        """The fixed input whose answer every endpoint must agree on: token ids spread over the vocabulary (read
        from config.json, so the check needs no tokenizer), and for /score a fixed text pair."""
        from ..checkpoint import config_json

        config = config_json(self.config.model, self.config.revision) or {}
        vocab = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size") or 1000
        ids = [1 + (k * 7919) % (max(int(vocab), 3) - 2) for k in range(1, 9)]
        return TokenizedInput(ids, pair=(CANARY_QUERY, CANARY_TEXT) if self.route == "score" else None)

    def check(self) -> None:
        """Ask every endpoint what it serves and computes, and whether it can do this model's job; refuse a
        fleet whose endpoints disagree (see the module docstring), naming them."""
        self._ensure_open()
        if self._checked:
            return
        self._canary_input = self._canary()
        _run(self._check_all(self._canary_input))
        self._checked = True

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("this fleet client was closed; create a new wrapper")

    def _probe_client(self) -> Any:
        import httpx

        timeout = httpx.Timeout(self.options.probe_timeout, connect=self.options.connect_timeout)
        return httpx.AsyncClient(timeout=timeout, headers=self._headers(), verify=_tls_context())

    async def _check_all(self, canary: TokenizedInput) -> None:
        async with self._probe_client() as client:
            problems = await asyncio.gather(*(self._check_one(client, e, canary) for e in self.endpoints))
        wrong = [f"{e.name}: {p.text}" for e, p in zip(self.endpoints, problems) if p is not None and p.wrong]
        if wrong:
            raise RemoteEndpointError("endpoint(s) not usable for " + self.config.model + ": " + "; ".join(wrong))
        live = [e for e, p in zip(self.endpoints, problems) if p is None]
        down = [f"{e.name}: {p.text}" for e, p in zip(self.endpoints, problems) if p is not None]
        if not live:
            raise RemoteEndpointError("no endpoint answers: " + "; ".join(down) + ". Start servers with "
                                      "`mteb-vllm serve MODEL` and check the URLs and ports")
        for text in down:
            logger.warning("endpoint left out: %s (checked again during the run)", text)
        for e, p in zip(self.endpoints, problems):
            if p is not None:
                e.ejected, e.reason = True, p.text
        self._agree(live)
        self._settle_length(live)

    async def _check_one(self, client: Any, endpoint: Endpoint, canary: TokenizedInput) -> _Problem | None:
        """The start's check, tried again on transient failures (a 500 or a dropped connection is a blip)."""
        problem = None
        for attempt in range(self.options.probe_attempts):
            problem = await self._check_once(client, endpoint, canary)
            if problem is None or problem.wrong:
                return problem
            if attempt + 1 < self.options.probe_attempts:
                await asyncio.sleep(min(self.options.max_backoff, self.options.backoff * 2 ** attempt))
        return problem

    async def _check_once(self, client: Any, endpoint: Endpoint, canary: TokenizedInput) -> _Problem | None:
        import httpx

        try:
            response = await client.get(f"{endpoint.url}/v1/models", auth=endpoint.auth)
        except (httpx.HTTPError, OSError) as exc:
            return _Problem(f"not reachable ({self._reason(exc)})")
        if response.status_code in (401, 403):
            return _Problem(_auth_problem(response.status_code, bool(self.options.api_key)), wrong=True)
        try:
            response.raise_for_status()
            cards = response.json().get("data") or []
            names = {str(c.get(k)) for c in cards for k in ("id", "root") if c.get(k)}
        except (httpx.HTTPError, ValueError, AttributeError, TypeError) as exc:
            return _Problem(f"not answering /v1/models as vLLM does ({self._reason(exc)})")
        identity = await self._identity(client, endpoint)
        if isinstance(identity, _Problem):
            return identity
        if not self._same_weights(names, identity):
            return _Problem(self._other_weights(names, identity), wrong=True)
        endpoint.served = str(cards[0].get("id"))
        endpoint.max_model_len = next((int(c["max_model_len"]) for c in cards if c.get("max_model_len")), None)
        endpoint.identity = identity
        return await self._probe(client, endpoint, canary)

    async def _identity(self, client: Any, endpoint: Endpoint) -> dict[str, Any] | _Problem | None:
        """What the endpoint says it computes; None for a server that does not say (not ``mteb-vllm serve``)."""
        import httpx

        try:
            response = await client.get(f"{endpoint.url}{IDENTITY_PATH}", auth=endpoint.auth)
        except (httpx.HTTPError, OSError) as exc:
            return _Problem(f"not answering {IDENTITY_PATH} ({self._reason(exc)})")
        if response.status_code in (404, 405):
            return None
        if response.status_code in (401, 403):
            return _Problem(_auth_problem(response.status_code, bool(self.options.api_key)), wrong=True)
        if response.status_code >= 500:
            return _Problem(f"failing on {IDENTITY_PATH} (HTTP {response.status_code}: "
                            f"{self._scrub(response.text[:200])})")
        try:
            identity = response.json()
            if not isinstance(identity, dict) or not identity.get("dtype") or not identity.get("revision"):
                raise ValueError("no dtype or revision")
        except ValueError as exc:
            return _Problem(f"answering {IDENTITY_PATH} with something else than an identity ({_reason(exc)})")
        if identity.get("schema") != SCHEMA:
            return _Problem(f"reports an identity of schema {identity.get('schema')!r}, this client reads schema "
                            f"{SCHEMA}: run the same mteb-vllm version on servers and clients", wrong=True)
        return identity

    def _same_weights(self, names: set[str], identity: dict[str, Any] | None) -> bool:
        """The endpoint runs our model's weights. With an identity: the same revision (a local folder's content
        hash, a hub commit), whatever the folder or name it is served under. Without one, the names are all there
        is: only the same id or path as ours is taken (another folder called ``model`` may hold a fine-tune)."""
        if identity is not None and _known_revision(self.revision):
            return identity.get("revision") == self.revision
        return self.config.model.lower() in {s.lower() for s in names}

    def _other_weights(self, names: set[str], identity: dict[str, Any] | None) -> str:
        if identity is not None and _known_revision(self.revision):
            return (f"serves {identity.get('path') or sorted(names)} at revision {identity.get('revision')}, but "
                    f"{self.config.model} is revision {self.revision}: other weights (start the server from the "
                    "same checkpoint)")
        hint = ("; it does not report which weights it loaded (not started by `mteb-vllm serve`), so a model of "
                "another name or path is not taken for this one: start it with `mteb-vllm serve`, or pass the "
                "id it serves as --model") if names else ""
        return f"serves {sorted(names) or 'nothing'}, not {self.config.model}{hint}"

    async def _probe(self, client: Any, endpoint: Endpoint, canary: TokenizedInput) -> _Problem | None:
        """The canary, a request of the kind this backend will send; None when the endpoint answers it well.

        A 4xx answer means the server cannot do this job ("cannot ..."); no answer or a 5xx means it is not well
        now, and it is left out like a server that is down. Garbage (NaN, zeros) is refused."""
        path, body = self._request(endpoint, [canary])
        try:
            response = await client.post(f"{endpoint.url}{path}", json=body, auth=endpoint.auth)
        except Exception as exc:
            return _Problem(f"not answering {path} ({self._reason(exc)})")
        if response.status_code in (401, 403):
            return _Problem(_auth_problem(response.status_code, bool(self.options.api_key)), wrong=True)
        if response.status_code >= 500:
            return _Problem(f"failing on {path} (HTTP {response.status_code}: {self._scrub(response.text[:200])})")
        if response.status_code >= 400:
            what = {"embed": "embed (is it a pooling/embedding model? start it with `mteb-vllm serve`)",
                    "classify": "score with the reranker's template head (start it with `mteb-vllm serve "
                                "--template ...` so it has the yes/no score head)",
                    "score": "score pairs (no classification head? start it with `mteb-vllm serve --task "
                             "classify`)"}[self.route]
            return _Problem(f"cannot {what}: HTTP {response.status_code} {self._scrub(response.text[:200])}",
                            wrong=True)
        try:
            rows = self._parse(response.json(), 1)
        except (ValueError, KeyError, TypeError, _Transient) as exc:
            return _Problem(f"answering {path} with something else than vLLM's format ({_reason(exc)})")
        garbage = _garbage(rows)
        if garbage:
            return _Problem(f"answers the canary input with {garbage}", wrong=True)
        endpoint.canary = rows[0].reshape(-1)
        return None

    # --- agreement -----------------------------------------------------------------------------------------
    def _tolerance(self, dtype: str) -> float:
        return CANARY_TOLERANCE.get(dtype, max(CANARY_TOLERANCE.values()))

    def _distance(self, a: np.ndarray, b: np.ndarray) -> float:
        if a.shape != b.shape:
            return float("inf")
        scale = 1.0 if a.size == 1 else max(float(np.abs(a).max()), float(np.abs(b).max()), 1e-12)
        return float(np.abs(a - b).max()) / scale

    def _agree(self, live: list[Endpoint]) -> None:
        """Refuse a fleet whose endpoints compute different things; settle its dtype, width and marker."""
        reporting = [e for e in live if e.identity is not None]
        groups: dict[str, list[Endpoint]] = {}
        for e in reporting:
            groups.setdefault(repr(sorted(computes(e.identity).items())), []).append(e)
        if len(groups) > 1:
            raise RemoteEndpointError(f"the endpoints compute {self.config.model} differently: "
                                      + _differences(list(groups.values()))
                                      + "; start every server with the same `mteb-vllm serve` command")
        self.identity = computes(reporting[0].identity) if reporting else None
        if self.identity is not None:
            served = canonical(str(self.identity["dtype"]))
            if self.requested_dtype != "auto" and self.requested_dtype != served:
                raise RemoteEndpointError(
                    f"the endpoints compute in {served} ({', '.join(e.name for e in reporting)}), not in the "
                    f"{self.requested_dtype} asked for: restart them with `mteb-vllm serve {self.config.model} "
                    f"--dtype {self.requested_dtype}`, or leave dtype out to evaluate in {served}")
            convert = self.identity.get("convert")
            if convert in ("embed", "classify") and self.config.convert in ("embed", "classify") \
                    and convert != self.config.convert:
                raise RemoteEndpointError(
                    f"the endpoints run {self.config.model} as {convert}, not {self.config.convert}: restart them "
                    f"with `mteb-vllm serve {self.config.model} --task {self.config.convert}`")
            self._check_pooling(reporting)
            dtype = served
        else:
            if self.config.output_modules and not _servers_reproduce(self.config.output_modules):
                raise RemoteEndpointError(
                    f"{', '.join(e.name for e in live)} do not report what they compute (not started by `mteb-vllm "
                    f"serve`), and {self.config.model}'s sentence-transformers modules ({self.config.output_modules}) "
                    "are ones a plain `vllm serve` applies its own way (or not at all). Start the servers with "
                    f"`mteb-vllm serve {self.config.model}`")
            dtype = self.requested_dtype if self.requested_dtype != "auto" else UNKNOWN_DTYPE
        # the canary: every endpoint (reporting or not) must answer it as the others do
        tolerance = self._tolerance(dtype)
        order = reporting + [e for e in live if e.identity is None]
        agreeing = {e.name: [o for o in order if self._distance(e.canary, o.canary) <= tolerance] for e in order}
        best = max(order, key=lambda e: len(agreeing[e.name]))  # the first such: reporting ones first
        majority = agreeing[best.name]
        outsiders = [e for e in order if e not in majority]
        if outsiders:
            tied = [e for e in order if len(agreeing[e.name]) == len(majority) and e not in majority]
            worst = max(self._distance(best.canary, e.canary) for e in outsiders)
            what = (f"{', '.join(e.name for e in outsiders)} answer the canary input differently from "
                    f"{', '.join(e.name for e in majority)}" if not tied or reporting else
                    f"the endpoints answer the canary input differently ({', '.join(e.name for e in order)}; none "
                    "reports what it computes, so it cannot be told which is right)")
            raise RemoteEndpointError(
                f"{what}: largest difference {worst:.3g} (relative), more than the {tolerance:g} allowed in "
                f"{dtype}. They compute something else (other weights, precision, pooling or width); start every "
                f"server with the same `mteb-vllm serve {self.config.model}` command")
        self._reference = best.canary
        self.width = int(best.canary.size) if self.route != "score" else 1
        expected = self._expected_width()
        if expected is not None and self.width != expected:
            raise RemoteEndpointError(
                f"{', '.join(e.name for e in order)} answer {self.width}-dim vectors, but {self.config.model} pools "
                f"to {expected} dimensions: they serve another model")
        self.dtype = dtype
        self.verified = self.identity is not None
        if self.identity is not None:
            self.marker = fleet_marker(self.identity)
            if not _known_revision(self.revision):  # e.g. a hub id this client could not resolve: the servers'
                self.revision = self.identity.get("revision") or self.revision
        else:
            self.marker = fleet_marker({
                "served": sorted({e.served for e in order}), "max_model_len": sorted({e.max_model_len or 0
                                                                                    for e in order}),
                "width": self.width, "endpoints": sorted(e.name for e in order),
                "canary": [round(float(v), 3) for v in self._reference]})
            logger.warning("%s do not report what they compute (not started by `mteb-vllm serve`): their canary "
                           "answers agree, but their precision is %s; results and cache entries are kept apart "
                           "under %s", ", ".join(e.name for e in order),
                           f"taken as {dtype}, as asked" if dtype != UNKNOWN_DTYPE else "not known",
                           f"backend={self.marker}")

    def _check_pooling(self, reporting: list[Endpoint]) -> None:
        """Servers started by ``mteb-vllm serve`` pool as the wrapper's model needs: the pooling task and type and
        no activation (the wrapper runs the model's own normalisation, Dense layers or activation itself)."""
        wanted = self.config.pooler_config
        if not isinstance(wanted, dict):
            return
        pooler = dict((self.identity or {}).get("pooler") or {})
        served = {"task": pooler.get("task"),
                  "pooling_type": pooler.get("seq_pooling_type") or pooler.get("pooling_type"),
                  "use_activation": pooler.get("use_activation")}
        differs = [f"{key} {served.get(key)!r} (needed: {value!r})" for key, value in wanted.items()
                   if key in served and served.get(key) is not None and value is not None and served[key] != value
                   and not (key == "pooling_type" and value == "ALL")]
        if differs:
            raise RemoteEndpointError(
                f"{', '.join(e.name for e in reporting)} pool {self.config.model} otherwise than this model needs: "
                + "; ".join(differs) + f". Start them with this version's `mteb-vllm serve {self.config.model}`")

    def _settle_length(self, live: list[Endpoint]) -> None:
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

    def _agrees_with_fleet(self, endpoint: Endpoint) -> str:
        """Why a returning endpoint does not compute what the fleet computes ("" when it does)."""
        if self.identity is not None and (endpoint.identity is None or computes(endpoint.identity) != self.identity):
            return "it now reports another identity" if endpoint.identity else "it no longer reports its identity"
        if self.width is not None and endpoint.canary is not None and self.route != "score" \
                and endpoint.canary.size != self.width:
            return f"it now answers {endpoint.canary.size}-dim vectors, the fleet's are {self.width}-dim"
        if self._reference is not None and endpoint.canary is not None:
            distance = self._distance(self._reference, endpoint.canary)
            if distance > self._tolerance(self.dtype):
                return f"its canary answer now differs by {distance:.3g}"
        if self.max_model_len and endpoint.max_model_len and endpoint.max_model_len < self.max_model_len:
            return f"it now serves max_model_len {endpoint.max_model_len}"
        return ""

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
                             "the cross-encoder stand-in (mteb_vllm.st_model.VllmCrossEncoder) sets them")
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
            from ..checkpoint import load_tokenizer

            self._tokenizer = load_tokenizer(self.config.model, self.config.revision,
                                             trust_remote_code=bool(self.config.trust_remote_code))
        return self._tokenizer

    @property
    def info(self) -> BackendInfo:
        """What runs the model. ``details``: ``endpoints``/``live`` counts, ``route``; once checked,
        ``identity`` (``fleet-<hash>`` of what the fleet computes, for cache keys), ``verified`` (the servers
        reported it, or only their canary answers agree), the servers' ``vllm``/``device`` where reported, and
        ``results_marker`` (= ``identity``) for a fleet that reports nothing, whose results are filed apart."""
        live = [e for e in self.endpoints if not e.ejected]
        details: dict[str, Any] = {"endpoints": len(self.endpoints), "live": len(live), "route": self.route}
        if self._checked:
            details.update(identity=self.marker, verified=self.verified)
            for key in ("vllm", "torch", "device"):
                values = sorted({str(e.identity[key]) for e in self.endpoints if e.identity and e.identity.get(key)})
                if values:
                    details[key] = ", ".join(values)
            if not self.verified:
                details["results_marker"] = self.marker
        return BackendInfo(kind=self.kind, model=self.model, revision=self.revision, dtype=self.dtype,
                           max_model_len=int(self.max_model_len or 0), details=details,
                           endpoints=tuple(e.url for e in self.endpoints))

    @property
    def started(self) -> bool:
        return self._checked

    def start(self) -> None:
        self.check()

    def pool(self, inputs: list[TokenizedInput], task: PoolingTask, *, desc: str = "") -> np.ndarray:
        self._ensure_open()
        if task == "token_embed":
            raise UnsupportedModelError(_TOKEN_PATH_REFUSAL.format(model=self.config.model))
        if not inputs:
            return np.zeros((0, 0), dtype=np.float32)
        with self._lock:
            self.check()
            too_long = [i for i, item in enumerate(inputs) if self.max_model_len and len(item) > self.max_model_len]
            if too_long:
                raise UsageError(f"{len(too_long)} input(s) are longer than the endpoints' max_model_len "
                                 f"{self.max_model_len}; the wrapper truncates to the backend's max_model_len")
            for e in self.endpoints:  # a new call: every endpoint that was out gets its check again now
                if e.ejected and not e.refused:
                    e.retry_at, e.readmit_delay = 0.0, 0.0
            rows = _run(self._pool(inputs, desc, self._canary_input))
        return np.stack([r.reshape(-1) for r in rows]).astype(np.float32, copy=False)

    async def _pool(self, inputs: list[TokenizedInput], desc: str, canary: TokenizedInput) -> list[np.ndarray]:
        import httpx
        from tqdm.auto import tqdm

        options = self.options
        pending = self._batches(inputs)
        results: list[np.ndarray | None] = [None] * len(inputs)
        # One client (connection pool) per endpoint: a shared pool scans every connection of the fleet for each
        # request it sends or finishes, which at 32 endpoints cost as much CPU as the JSON encoding.
        limits = httpx.Limits(max_connections=options.max_in_flight, max_keepalive_connections=options.max_in_flight)
        timeout = httpx.Timeout(options.read_timeout, connect=options.connect_timeout)
        wake = asyncio.Event()
        running: set[asyncio.Task] = set()
        checks: set[asyncio.Task] = set()
        failure: list[BaseException] = []
        show = bool(desc) and not os.environ.get("MTEB_VLLM_NO_PROGRESS")
        started, tokens_done = time.perf_counter(), 0
        outage_since: float | None = None

        async with contextlib.AsyncExitStack() as stack:
            headers = self._headers()
            clients = {e.url: await stack.enter_async_context(
                httpx.AsyncClient(timeout=timeout, limits=limits, verify=_tls_context(), headers=headers))
                for e in self.endpoints}
            probe_client = await stack.enter_async_context(self._probe_client())
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
                        batch.garbage += int(exc.garbage)
                        batch.avoid.add(endpoint.url)
                        if batch.attempt >= options.attempts:
                            failure.append(RemoteEndpointError(self._batch_failed(batch, len(items), endpoint, exc)))
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

                async def recheck(endpoint: Endpoint) -> None:
                    try:
                        await self._recheck(probe_client, endpoint, canary)
                    finally:
                        endpoint.checking = False
                        wake.set()

                while (pending or running) and not failure:
                    now = time.monotonic()
                    for e in self.endpoints:  # out, not refused, due: check it again in the background
                        if e.ejected and not e.refused and not e.checking and e.retry_at <= now:
                            e.checking = True
                            task = asyncio.ensure_future(recheck(e))
                            checks.add(task)
                            task.add_done_callback(checks.discard)
                    live = [e for e in self.endpoints if not e.ejected]
                    if not live:
                        outage_since = outage_since if outage_since is not None else now
                        waiting = [e for e in self.endpoints if not e.refused]
                        if not waiting or now - outage_since > options.outage_wait:
                            reasons = "; ".join(f"{e.name}: {e.refused or e.reason}" + (
                                f", and its check again: {e.check_reason}" if e.check_reason and not e.refused
                                else "") for e in self.endpoints)
                            failure.append(RemoteEndpointError(
                                f"every endpoint was taken out ({reasons})"
                                + (f"; none came back within {options.outage_wait:g} s" if waiting else "")))
                            break
                        if outage_since == now:
                            logger.warning("every endpoint is out; waiting up to %g s for one to pass its check "
                                           "again", options.outage_wait)
                        wake.clear()
                        # wake up when the next check is due or the wait ends (not up to 0.2 s after), so a
                        # fleet waits neither longer than outage_wait nor longer than needed for a check
                        next_at = min([e.retry_at for e in waiting if not e.checking]
                                      + [outage_since + options.outage_wait])
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(wake.wait(), timeout=min(0.2, max(0.005, next_at - now)))
                        continue
                    outage_since = None
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
                        # A finished task leaves `running` in a done-callback that may not have run yet: waiting
                        # for such a task would wait for a wake-up that already came, i.e. the whole second.
                        running.difference_update([t for t in running if t.done()])
                        if running:
                            with contextlib.suppress(asyncio.TimeoutError):
                                await asyncio.wait_for(wake.wait(), timeout=1.0)
                        elif pending:
                            await asyncio.sleep(0.05)
                for task in list(running) + list(checks):
                    task.cancel()
                if running or checks:
                    await asyncio.gather(*running, *checks, return_exceptions=True)
        for e in self.endpoints:
            e.checking = False
        if failure:
            raise failure[0]
        return results  # type: ignore[return-value]

    async def _recheck(self, client: Any, endpoint: Endpoint, canary: TokenizedInput) -> None:
        """Check an endpoint that was taken out; re-admit it when it passes and computes what the fleet does."""
        problem = await self._check_once(client, endpoint, canary)
        if problem is None:
            problem_text = self._agrees_with_fleet(endpoint)
            if problem_text:
                problem = _Problem(problem_text, wrong=True)
        if problem is None:
            endpoint.ejected, endpoint.failures, endpoint.reason, endpoint.check_reason = False, 0, "", ""
            endpoint.readmit_delay = 0.0
            logger.warning("endpoint %s passed its check again and is back in the fleet", endpoint.name)
        elif problem.wrong:
            endpoint.refused = problem.text
            logger.warning("endpoint %s stays out: %s", endpoint.name, problem.text)
        else:
            endpoint.check_reason = problem.text
            endpoint.readmit_delay = min(self.options.max_readmit_delay,
                                         max(self.options.readmit_delay, 2 * endpoint.readmit_delay))
            endpoint.retry_at = time.monotonic() + endpoint.readmit_delay

    async def _send(self, client: Any, endpoint: Endpoint, items: list[TokenizedInput]) -> list[np.ndarray]:
        import httpx

        path, body = self._request(endpoint, items)
        try:
            response = await client.post(f"{endpoint.url}{path}", json=body, auth=endpoint.auth)
        except httpx.TimeoutException as exc:
            raise _Transient(f"no answer in time ({self._reason(exc) or type(exc).__name__}; --read-timeout / "
                             "--connect-timeout set the limits)", timeout=True) from exc
        except httpx.HTTPError as exc:
            raise _Transient(self._reason(exc)) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise _Transient(f"HTTP {response.status_code}: {self._scrub(response.text[:200])}")
        if response.status_code >= 400:
            raise RemoteEndpointError(f"{endpoint.name}{path} refused a request: HTTP {response.status_code}: "
                                      f"{self._scrub(response.text[:500])}")
        try:
            rows = self._parse(response.json(), len(items))
        except (ValueError, KeyError, TypeError) as exc:
            raise _Transient(f"malformed answer ({_reason(exc)}): {self._scrub(response.text[:120])!r}") from exc
        garbage = _garbage(rows, self.width)
        if garbage:
            raise _Transient(f"answered {garbage}", garbage=True)
        return rows

    def _batch_failed(self, batch: _Batch, size: int, endpoint: Endpoint, exc: BaseException) -> str:
        text = f"a batch of {size} inputs failed {batch.attempt} times; last: {endpoint.name}: {exc}"
        if batch.garbage == batch.attempt and len(batch.avoid) > 1 and "NaN" in str(exc):
            text += (f". Every endpoint tried answers NaN/Inf for these inputs: the model overflows in "
                     f"{self.dtype} on the servers; restart them with `mteb-vllm serve {self.config.model} "
                     "--dtype float32`")
        return text

    def _failed(self, endpoint: Endpoint, exc: _Transient) -> None:
        endpoint.failures += 1
        endpoint.reason = str(exc)
        if (endpoint.failures >= self.options.eject_after or exc.timeout) and not endpoint.ejected:
            endpoint.ejected = True
            endpoint.readmit_delay = self.options.readmit_delay
            endpoint.retry_at = time.monotonic() + endpoint.readmit_delay
            live = sum(1 for e in self.endpoints if not e.ejected)
            logger.warning("endpoint %s taken out after %d failure(s) in a row (%s); %d endpoint(s) go on, and it "
                           "is checked again in %g s", endpoint.name, endpoint.failures, exc, live,
                           endpoint.readmit_delay)
        else:
            logger.info("endpoint %s failed (%s); retrying elsewhere", endpoint.name, exc)

    def close(self) -> None:
        """No connection outlives a call; after close every call raises, as a closed local engine does."""
        self._closed = True


def _servers_reproduce(output_modules: str) -> bool:
    """Whether a plain ``vllm serve`` computes a model's sentence-transformers chain as the wrapper does: only for
    a pooling vLLM has followed by Normalize (vLLM normalises too; normalising twice changes nothing)."""
    kinds = [part.split("{", 1)[0].split("#", 1)[0].strip() for part in output_modules.split(" > ")]
    return kinds == ["Pooling", "Normalize"]


def _auth_problem(status: int, have_key: bool) -> str:
    if have_key:
        return (f"refused our API key (HTTP {status}): pass the key the server was started with (--api-key, "
                "MTEB_VLLM_API_KEY or VLLM_API_KEY)")
    return (f"needs an API key (HTTP {status}): pass it with --api-key or MTEB_VLLM_API_KEY (VLLM_API_KEY, which "
            "`vllm serve --api-key` also reads, works too)")


def _known_revision(revision: str | None) -> bool:
    """A revision that names exact weights: a content hash or a hub commit (not a branch name)."""
    import re

    return bool(revision) and (revision.startswith("local-") or bool(re.fullmatch(r"[0-9a-f]{40}", revision)))


def _garbage(rows: list[np.ndarray], width: int | None = None) -> str:
    """What is wrong with an answer's rows, or "": NaN/Inf values, another width than the fleet's, or all-zero
    rows of two or more values (a pooled embedding or a softmax cannot be all zeros; a single score can)."""
    sizes = {r.size for r in rows}
    if width is not None and sizes != {width}:
        return f"vectors of width {sorted(sizes)}, not the fleet's {width}"
    if len(sizes) > 1:
        return f"vectors of different widths {sorted(sizes)}"
    matrix = np.stack([r.reshape(-1) for r in rows])
    bad = int((~np.isfinite(matrix)).any(axis=1).sum())
    if bad:
        return f"{bad} of {len(rows)} vector(s) containing NaN or Inf"
    if matrix.shape[1] > 1:
        zeros = int((matrix == 0).all(axis=1).sum())
        if zeros:
            return f"{zeros} of {len(rows)} all-zero vector(s)"
    return ""


def _differences(groups: list[list[Endpoint]]) -> str:
    """Which identity fields differ between groups of endpoints, and who reports what."""
    identities = [computes(g[0].identity or {}) for g in groups]
    fields = [k for k in identities[0] if len({repr(i.get(k)) for i in identities}) > 1]
    parts = []
    for key in fields:
        parts.append(f"{key}: " + "; ".join(f"{', '.join(e.name for e in g)}: {i.get(key)}"
                                             for g, i in zip(groups, identities)))
    return " / ".join(parts)


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


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
