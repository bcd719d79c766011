"""Encode throughput on long texts: the same 2000 texts of 5-200 words, one model, fresh processes, one run.

Backends: sentence-transformers (its default, float32), mteb-vllm with no dtype (the defaults), mteb-vllm in
float32, and mteb's built-in vLLM wrapper in float32 (its own default, float16 emulated on this CPU, is in
``e2e_defaults.py``). Each child loads its model, warms up on 32 texts, then encodes all 2000 once; rounds are
interleaved and medians reported. Outputs are compared by cosine with sentence-transformers'.

    .venv/bin/python benchmarks/encode_throughput.py [--n 2000] [--repeats 3] [--backends st ours ours-fp32 builtin]
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

NAME = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("st", "ours", "ours-fp32", "builtin")
LABELS = {"st": "sentence-transformers (default, float32)", "ours": "mteb-vllm, defaults",
          "ours-fp32": "mteb-vllm, dtype=float32", "builtin": "mteb built-in vLLM wrapper, dtype=float32"}


def _load(name: str, path: str):
    """(model, encode(texts) -> array, dtype it computes in)."""
    if name == "st":
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(path, device="cpu")
        return lambda texts: st.encode(texts, batch_size=32), "float32"
    if name in ("ours", "ours-fp32"):
        from mteb_vllm import VllmEncoderWrapper

        model = VllmEncoderWrapper(path, model_name=NAME, **({"dtype": "float32"} if name == "ours-fp32" else {}))
        return model.embed_texts, model.dtype
    from mteb.mocks.mock_tasks.sts import MockSTSTask
    from mteb.models.vllm_wrapper import VllmEncoderWrapper as Builtin

    from mteb_vllm.cpu_defaults import CPU_MEMORY_FRACTION

    builtin = Builtin(path, dtype="float32", gpu_memory_utilization=CPU_MEMORY_FRACTION)
    meta = MockSTSTask().metadata
    return (lambda texts: builtin.encode([{"text": texts}], task_metadata=meta, hf_split="test",
                                         hf_subset="default")), "float32"


def _child(name: str, n: int, out: str) -> None:
    import json

    from mteb_vllm import default_model_path
    from mteb_vllm.workloads import variable_texts

    texts = variable_texts(n)
    started = time.perf_counter()
    encode, dtype = _load(name, default_model_path())
    start = time.perf_counter() - started
    encode(texts[:32])  # warm-up
    started = time.perf_counter()
    vectors = np.asarray(encode(texts), dtype=np.float32)
    seconds = time.perf_counter() - started
    np.save(out + ".npy", vectors)
    with open(out + ".json", "w") as fh:
        json.dump({"seconds": seconds, "start_s": start, "dtype": dtype}, fh)
    sys.stdout.flush()
    os._exit(0)


def main() -> None:
    from harness import benchmark_parser, parse_benchmark_args

    parser = benchmark_parser("encode_throughput.json")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    args = parse_benchmark_args(parser)
    if args.child:
        _child(args.child, args.n, args.out)
        return
    import logging

    from transformers import AutoTokenizer

    from mteb_vllm import default_model_path
    from harness import medians, run_rounds, write_json
    from mteb_vllm.workloads import variable_texts

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    texts = variable_texts(args.n)
    tokens = sum(min(len(ids), 256) for ids in AutoTokenizer.from_pretrained(default_model_path())(texts)["input_ids"])
    runs = run_rounds(__file__, args.backends, ["--n", str(args.n)], repeats=args.repeats)
    results = {}
    reference = runs["st"][0].output if "st" in runs else None
    for name, done in runs.items():
        stats = medians(done, ("seconds", "start_s"))
        seconds = stats["seconds"]["median"]
        row = {"label": LABELS[name], "dtype": done[0].timing["dtype"], **stats, "texts_per_s": args.n / seconds,
               "tokens_per_s": tokens / seconds, "runs": [r.timing for r in done]}
        if reference is not None:
            out = done[0].output
            cos = (out * reference).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)
            row["min_cosine_vs_st"] = float(cos.min())
        results[name] = row
    if "st" in results:
        for row in results.values():
            row["ratio_vs_st"] = results["st"]["seconds"]["median"] / row["seconds"]["median"]
    report = write_json(args.json, {"workload": {"texts": args.n, "tokens": tokens, "words": "5-200"},
                                    "repeats": args.repeats, "results": results})
    for row in report["results"].values():
        print(f"{row['label']:45s} {row['dtype']:9s} {row['seconds']['median']:7.1f} s  "
              f"x{row.get('ratio_vs_st', float('nan')):.2f}  start {row['start_s']['median']:.1f} s")


if __name__ == "__main__":
    main()
