"""What a user waits for, with no options: load the model and ``mteb.evaluate`` three STS-shaped tasks.

Backends, each in a fresh process, interleaved rounds, medians:

- ``st``: mteb's reference path (the registry loader, sentence-transformers, its default float32);
- ``ours``: ``VllmEncoderWrapper(path)`` with no dtype (the defaults: bfloat16 where the CPU computes it
  natively, else float32);
- ``ours-fp32``: the same with ``dtype="float32"``;
- ``builtin``: mteb's own vLLM wrapper with its defaults (vLLM's "auto"), given only the memory fraction that
  lets it start on a CPU.

Workload: :func:`mteb_vllm.workloads.sts_tasks` (the sizes of STS12, STS13 and SICK-R: 14,535 pairs, 29,070
sentences, 23,713 unique, 9.7 words / 13.3 MiniLM tokens on average). Times are from the child's start
(``import mteb`` included) to the last score; every main score is compared with the float32 reference.

    .venv/bin/python benchmarks/e2e_defaults.py [--repeats 3] [--backends st ours ours-fp32 builtin]
"""

from __future__ import annotations

import json
import os
import sys
import time

T0 = time.perf_counter()  # the child's clock starts before its first import

NAME = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("st", "ours", "ours-fp32", "builtin")
LABELS = {"st": "sentence-transformers (reference path, float32)", "ours": "mteb-vllm, defaults",
          "ours-fp32": "mteb-vllm, dtype=float32", "builtin": "mteb built-in vLLM wrapper, defaults"}


def _load(name: str, path: str):
    if name == "st":
        from mteb_vllm.parity import reference_model
        from mteb_vllm.resolve import registry_meta

        return reference_model(path, registry_meta(NAME), cross_encoder=False), "float32"
    if name in ("ours", "ours-fp32"):
        from mteb_vllm import VllmEncoderWrapper

        extra = {"dtype": "float32"} if name == "ours-fp32" else {}
        model = VllmEncoderWrapper(path, model_name=NAME, **extra)
        return model, model.dtype
    from mteb.models.vllm_wrapper import VllmEncoderWrapper as Builtin

    from mteb_vllm.cpu_defaults import CPU_MEMORY_FRACTION

    model = Builtin(path, gpu_memory_utilization=CPU_MEMORY_FRACTION)  # its 0.9 default does not fit on a CPU
    return model, str(model.llm.llm_engine.model_config.dtype).replace("torch.", "")


def _child(name: str, out: str) -> None:
    import mteb  # noqa: F401  (timed: part of what a user waits for)
    from harness import load_and_evaluate

    from mteb_vllm import default_model_path
    from mteb_vllm.workloads import sts_tasks

    tasks = sts_tasks()
    for task in tasks:  # generating the data is not part of what is timed
        task.load_data()
    imported = time.perf_counter() - T0
    timing = load_and_evaluate(lambda: _load(name, default_model_path()), tasks)
    with open(out + ".json", "w") as fh:
        json.dump({"total_s": imported + timing["load_s"] + timing["evaluate_s"], "import_s": imported, **timing},
                  fh)
    sys.stdout.flush()
    os._exit(0)  # engine threads need no orderly teardown; the result is on disk


def main() -> None:
    from harness import benchmark_parser, parse_benchmark_args

    parser = benchmark_parser("e2e_defaults.json")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    args = parse_benchmark_args(parser)
    if args.child:
        _child(args.child, args.out)
        return
    import logging

    from harness import medians, run_rounds, write_json
    from mteb_vllm.workloads import STS_SHAPES, describe_sentences, sts_tasks

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sentences = []
    for task in sts_tasks():
        task.load_data()
        sentences += list(task.dataset["test"]["sentence1"]) + list(task.dataset["test"]["sentence2"])
    from transformers import AutoTokenizer

    from mteb_vllm import default_model_path

    shape = describe_sentences(sentences, AutoTokenizer.from_pretrained(default_model_path()))
    runs = run_rounds(__file__, args.backends, [], repeats=args.repeats)
    results = {}
    for name, done in runs.items():
        stats = medians(done, ("total_s", "load_s", "evaluate_s"))
        results[name] = {"label": LABELS[name], "dtype": done[0].timing["dtype"], **stats,
                         "scores": done[0].timing["scores"], "runs": [r.timing for r in done]}
    if "st" in results:
        reference = results["st"]
        for row in results.values():
            row["ratio_vs_st"] = reference["total_s"]["median"] / row["total_s"]["median"]
            row["max_score_delta_vs_st"] = max(abs(row["scores"][t] - reference["scores"][t]) for t in row["scores"])
    report = write_json(args.json, {"workload": {"tasks": [list(s) for s in STS_SHAPES], **shape},
                                    "repeats": args.repeats, "results": results})
    for name, row in report["results"].items():
        print(f"{row['label']:52s} {row['dtype']:9s} {row['total_s']['median']:7.1f} s "
              f"({row['total_s']['min']:.1f}-{row['total_s']['max']:.1f})  x{row.get('ratio_vs_st', float('nan')):.2f}"
              f"  max |score delta| {row.get('max_score_delta_vs_st', float('nan')):.1e}")


if __name__ == "__main__":
    main()
