"""What the scripts in ``benchmarks/`` share: fresh child processes in interleaved rounds, medians with their
range, and results saved with the machine and the versions they were measured on.

Why here and not in the package: only these scripts use it, and the wheel ships what users run (the ``bench``
command keeps what it needs in :mod:`mteb_vllm.bench`, which this module builds on). The scripts run as
``python benchmarks/<script>.py``, so this folder is on their import path.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mteb_vllm.bench import machine_info, run_isolated, versions

logger = logging.getLogger(__name__)


def load_and_evaluate(load: Any, tasks: list[Any]) -> dict[str, Any]:
    """In a child: ``load()`` (the model and the precision it computes in), then ``mteb.evaluate`` on ``tasks``
    (their data loaded beforehand, so generating it is not timed); the two times, the precision and each task's
    main score."""
    import mteb

    started = time.perf_counter()
    model, dtype = load()
    loaded = time.perf_counter()
    result = mteb.evaluate(model, tasks, cache=None, show_progress_bar=False)
    done = time.perf_counter()
    return {"load_s": loaded - started, "evaluate_s": done - loaded, "dtype": dtype,
            "scores": {r.task_name: float(r.get_score()) for r in result.task_results}}


@dataclass
class ChildRun:
    """One benchmark child process: its timing JSON, its output array (if it saved one) and wall time."""

    timing: dict[str, Any]
    output: np.ndarray | None
    wall_s: float


def benchmark_parser(json_name: str, *, children: bool = True, repeats: int = 3) -> argparse.ArgumentParser:
    """The flags every ``benchmarks/*.py`` script shares: ``--repeats`` (interleaved rounds), ``--json`` (where
    its results go, under ``benchmarks/results/``) and, for scripts whose rounds are fresh child processes
    (:func:`run_rounds`), the children's own hidden ``--child``/``--out``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=repeats,
                        help="rounds, interleaved across what is compared; medians are reported")
    parser.add_argument("--json", default=f"benchmarks/results/{json_name}")
    if children:
        parser.add_argument("--child", help=argparse.SUPPRESS)
        parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser


def parse_benchmark_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, and set what every benchmark runs with (inherited by its children): offline, no progress bars."""
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MTEB_VLLM_NO_PROGRESS", "1")
    return args


def run_rounds(script: str, backends: list[str], child_args: list[str], repeats: int = 3,
               env: dict[str, str] | None = None) -> dict[str, list[ChildRun]]:
    """Run ``python script --child NAME ... --out PATH`` for every backend, ``repeats`` rounds of one fresh
    process per backend, interleaved (a slow spell of this shared machine then hits every backend alike).

    Each child runs in its own session and whatever it leaves is killed (:func:`run_isolated`); it writes
    ``PATH.json`` (its timings) and optionally ``PATH.npy``. A child that fails stops the benchmark with its
    stderr's last lines: a crash is never a data point, nor a skip.
    """
    tmp = tempfile.mkdtemp(prefix="mteb_vllm_bench_")
    done: dict[str, list[ChildRun]] = {name: [] for name in backends}
    for round_ in range(repeats):
        for name in backends:
            out = os.path.join(tmp, f"{name}-{round_}")
            started = time.perf_counter()
            code = run_isolated([sys.executable, script, "--child", name, *child_args, "--out", out],
                                out + ".stderr", env=env)
            wall = time.perf_counter() - started
            if code != 0 or not os.path.exists(out + ".json"):
                tail = Path(out + ".stderr").read_text(errors="replace").strip().splitlines()[-15:]
                raise RuntimeError(f"benchmark child {name} failed (exit {code}):\n" + "\n".join(tail))
            with open(out + ".json") as fh:
                timing = json.load(fh)
            array = np.load(out + ".npy") if os.path.exists(out + ".npy") else None
            done[name].append(ChildRun(timing, array, wall))
            logger.info("round %d %s: %s", round_ + 1, name, {k: v for k, v in timing.items() if
                                                               isinstance(v, (int, float))})
    return done


def medians(runs: list[ChildRun], keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Median, minimum and maximum of each of ``keys`` over one backend's runs."""
    out = {}
    for key in keys:
        values = [float(run.timing[key]) for run in runs]
        out[key] = {"median": float(np.median(values)), "min": min(values), "max": max(values)}
    return out


def write_json(path: str | Path, body: dict[str, Any]) -> dict[str, Any]:
    """Save a benchmark's results with the machine and package versions they were measured on."""
    report = {"machine": machine_info(), "versions": versions(), **body}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2))
    return report
