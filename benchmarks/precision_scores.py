"""What each precision does to MTEB main scores: the packaged all-MiniLM-L6-v2 on the three generated STS
workloads, float32 reference vs our engine in float32, bfloat16 and float16.

Why: the GPU default precision (``mteb_vllm.precision``) trades exactness for speed, and the trade is only
acceptable if the scores stay where the reference puts them. A GPU cannot be measured here, but the score shift
is a property of the precision's rounding, not of the device: a CPU computes the same bfloat16 and float16
numbers (float16 emulated on CPUs without AVX512-FP16/AMX-FP16, so slowly; the timings of float16 rows are not
what a GPU does). Backends, each in a fresh process:

- ``st``: mteb's reference path (the registry loader, sentence-transformers in float32): the yardstick;
- ``ours-fp32``, ``ours-bf16``, ``ours-fp16``: ``VllmEncoderWrapper(path, dtype=...)``;
- ``st-bf16``, ``st-fp16`` (not run by default): sentence-transformers cast to that precision, to tell the
  precision's shift from the engine's.

Workload: :func:`mteb_vllm.workloads.sts_tasks` (the sizes of STS12, STS13 and SICK-R), or their first
``--pairs`` pairs each. Scores are deterministic for a given machine, so one round is the default. The output
gives each task's main score (Spearman), its delta from the reference, and the largest delta per backend.

    .venv/bin/python benchmarks/precision_scores.py [--backends st ours-fp32 ours-bf16 ours-fp16] [--pairs N]
"""

from __future__ import annotations

import json
import os
import sys

NAME = "sentence-transformers/all-MiniLM-L6-v2"
DTYPES = {"ours-fp32": "float32", "ours-bf16": "bfloat16", "ours-fp16": "float16",
          "st-bf16": "bfloat16", "st-fp16": "float16"}
BACKENDS = ("st", "ours-fp32", "ours-bf16", "ours-fp16", "st-bf16", "st-fp16")
DEFAULT_BACKENDS = ("st", "ours-fp32", "ours-bf16", "ours-fp16")
LABELS = {"st": "reference path (sentence-transformers, float32)", "ours-fp32": "mteb-vllm, dtype=float32",
          "ours-bf16": "mteb-vllm, dtype=bfloat16", "ours-fp16": "mteb-vllm, dtype=float16",
          "st-bf16": "sentence-transformers cast to bfloat16", "st-fp16": "sentence-transformers cast to float16"}


def _tasks(pairs: int | None):
    from mteb_vllm.workloads import STS_SHAPES, sts_task

    return [sts_task(name, min(n, pairs) if pairs else n, seed) for name, n, seed in STS_SHAPES]


def _load(name: str, path: str):
    from mteb_vllm.parity import reference_model
    from mteb_vllm.resolve import registry_meta

    if name.startswith("st"):
        model = reference_model(path, registry_meta(NAME), cross_encoder=False)
        if name in DTYPES:
            import torch

            model.model.to(getattr(torch, DTYPES[name]))
        dtype = str(next(model.model.parameters()).dtype).replace("torch.", "")
        return model, dtype
    from mteb_vllm import VllmEncoderWrapper

    model = VllmEncoderWrapper(path, model_name=NAME, dtype=DTYPES[name])
    return model, model.dtype


def _child(name: str, out: str, pairs: int | None) -> None:
    from harness import load_and_evaluate

    from mteb_vllm import default_model_path

    tasks = _tasks(pairs)
    for task in tasks:
        task.load_data()
    timing = load_and_evaluate(lambda: _load(name, default_model_path()), tasks)
    with open(out + ".json", "w") as fh:
        json.dump(timing, fh)
    sys.stdout.flush()
    os._exit(0)  # engine threads need no orderly teardown; the result is on disk


def main() -> None:
    from harness import benchmark_parser, parse_benchmark_args

    parser = benchmark_parser("precision_scores.json", repeats=1)
    parser.add_argument("--backends", nargs="+", default=list(DEFAULT_BACKENDS), choices=BACKENDS)
    parser.add_argument("--pairs", type=int, help="only the first N pairs of each task (a quick run)")
    args = parse_benchmark_args(parser)
    if args.child:
        _child(args.child, args.out, args.pairs)
        return
    import logging

    from harness import medians, run_rounds, write_json

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    backends = list(dict.fromkeys(["st", *args.backends]))  # the reference is what every delta is measured from
    child_args = ["--pairs", str(args.pairs)] if args.pairs else []
    runs = run_rounds(__file__, backends, child_args, repeats=args.repeats)
    reference = runs["st"][0].timing["scores"]
    results = {}
    for name, done in runs.items():
        scores = done[0].timing["scores"]
        if any(run.timing["scores"] != scores for run in done[1:]):
            logging.warning("%s: scores differ between rounds; the first round's are reported", name)
        deltas = {task: scores[task] - reference[task] for task in scores}
        results[name] = {"label": LABELS[name], "dtype": done[0].timing["dtype"], "scores": scores,
                         "delta_vs_reference": deltas, "max_abs_delta": max(abs(d) for d in deltas.values()),
                         **medians(done, ("load_s", "evaluate_s")), "runs": [r.timing for r in done]}
    shapes = [[t.metadata.name, len(t.dataset["test"])] for t in _loaded(_tasks(args.pairs))]
    report = write_json(args.json, {"workload": {"tasks": shapes, "pairs_cap": args.pairs},
                                    "repeats": args.repeats, "results": results})
    tasks = list(reference)
    print(f"{'backend':48s} {'dtype':9s} " + " ".join(f"{t:>16s}" for t in tasks) + "   max |delta|")
    for row in report["results"].values():
        cells = " ".join(f"{row['scores'][t]:.5f} {row['delta_vs_reference'][t]:+.1e}".rjust(16) for t in tasks)
        print(f"{row['label']:48s} {row['dtype']:9s} {cells}   {row['max_abs_delta']:.1e}")


def _loaded(tasks):
    for task in tasks:
        task.load_data()
    return tasks


if __name__ == "__main__":
    main()
