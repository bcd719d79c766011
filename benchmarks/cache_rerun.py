"""The embedding cache: what a rerun costs when everything is cached, and what the cache costs a cold run.

Per round, three fresh processes, each timing load + ``mteb.evaluate`` of the three STS-shaped tasks of
``e2e_defaults.py`` with mteb-vllm's defaults and a lazily started engine (what ``mteb-vllm run`` does):

- ``nocache``: no cache (the cold run without it);
- ``cold``: an emptied cache folder (the same cold run, writing every vector);
- ``warm``: the folder ``cold`` just filled (a fully cached rerun: the engine never starts).

Times are from the child's start (``import mteb`` included); the work after the imports is reported too.

    .venv/bin/python benchmarks/cache_rerun.py [--repeats 3]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

T0 = time.perf_counter()

NAME = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("nocache", "cold", "warm")


def _child(name: str, cache_dir: str, out: str) -> None:
    import json

    if name == "cold":
        shutil.rmtree(cache_dir, ignore_errors=True)
    import mteb

    from mteb_vllm import VllmEncoderWrapper, default_model_path
    from mteb_vllm.workloads import sts_tasks

    tasks = sts_tasks()
    for task in tasks:
        task.load_data()
    imported = time.perf_counter() - T0
    started = time.perf_counter()
    model = VllmEncoderWrapper(default_model_path(), model_name=NAME, lazy_start=True,
                               cache_dir=None if name == "nocache" else cache_dir)
    result = mteb.evaluate(model, tasks, cache=None, show_progress_bar=False)
    work = time.perf_counter() - started
    stats = getattr(model.backend, "stats", None)
    with open(out + ".json", "w") as fh:
        json.dump({"total_s": imported + work, "work_s": work, "import_s": imported,
                   "engine_started": bool(getattr(model.backend, "started", True)),
                   "cached": getattr(stats, "cached", None), "computed": getattr(stats, "computed", None),
                   "scores": {r.task_name: float(r.get_score()) for r in result.task_results}}, fh)
    sys.stdout.flush()
    os._exit(0)


def main() -> None:
    from harness import benchmark_parser, parse_benchmark_args

    parser = benchmark_parser("cache_rerun.json")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "mteb_vllm_bench_cache"))
    args = parse_benchmark_args(parser)
    if args.child:
        _child(args.child, args.cache_dir, args.out)
        return
    import logging

    from harness import medians, run_rounds, write_json

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = run_rounds(__file__, list(BACKENDS), ["--cache-dir", args.cache_dir], repeats=args.repeats)
    shutil.rmtree(args.cache_dir, ignore_errors=True)
    results = {name: {**medians(done, ("total_s", "work_s")), "runs": [r.timing for r in done]}
               for name, done in runs.items()}
    cold, warm, plain = results["cold"], results["warm"], results["nocache"]
    summary = {
        "rerun_speedup_total": cold["total_s"]["median"] / warm["total_s"]["median"],
        "rerun_speedup_work": cold["work_s"]["median"] / warm["work_s"]["median"],
        "cold_overhead_total": cold["total_s"]["median"] / plain["total_s"]["median"] - 1,
        "cold_overhead_work": cold["work_s"]["median"] / plain["work_s"]["median"] - 1,
        "warm_engine_started": any(r["engine_started"] for r in warm["runs"]),
        "warm_computed": [r["computed"] for r in warm["runs"]],
        "scores_identical": all(r["scores"] == cold["runs"][0]["scores"] for r in warm["runs"]),
    }
    write_json(args.json, {"workload": "e2e_defaults.py's three STS-shaped tasks (29,070 sentences)",
                           "repeats": args.repeats, "results": results, "summary": summary})
    for name, row in results.items():
        print(f"{name:8s} total {row['total_s']['median']:6.1f} s  work {row['work_s']['median']:6.1f} s")
    print(summary)


if __name__ == "__main__":
    main()
