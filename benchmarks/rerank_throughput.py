"""Rerank throughput, same 2000 variable-length (query, document) pairs, same weights, one run:
sentence-transformers CrossEncoder vs mteb's built-in VllmCrossEncoderWrapper vs mteb-vllm. Prints pairs/s,
tokens/s, ratios and the largest score difference to sentence-transformers. Each backend runs in its own
fresh process, one after the other, ``--repeats`` rounds; medians are reported.

The model has the shape of cross-encoder/ms-marco-MiniLM-L6-v2 (BERT, 6 layers, 384 wide): the packaged
all-MiniLM-L6-v2 encoder with a seeded classifier head, since no reranker weights can be downloaded here.
Throughput does not depend on what the head learned.

    .venv/bin/python benchmarks/rerank_throughput.py [--n 2000] [--backends st ours builtin] [--repeats 3]
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np



def make_pairs(n: int, seed: int = 1) -> tuple[list[str], list[str]]:
    """20 documents per query, documents 5-200 words, queries 3-15 words (a reranking workload)."""
    from mteb_vllm.workloads import variable_texts

    docs = variable_texts(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    queries = [" ".join(q.split()[: int(rng.integers(3, 16))]) for q in variable_texts(max(1, n // 20), seed=seed + 2)]
    return [queries[i // 20 % len(queries)] for i in range(n)], docs


def build_model(dst: str) -> str:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from mteb_vllm import default_model_path

    if os.path.exists(os.path.join(dst, "config.json")):
        return dst
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(default_model_path(), num_labels=1)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(dst)
    return dst


def load_st(path):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(path, device="cpu", max_length=512)


def score_st(model, queries, docs):
    return model.predict(list(zip(queries, docs)), batch_size=32, show_progress_bar=False)


def load_ours(path):
    from mteb_vllm import VllmCrossEncoderWrapper

    return VllmCrossEncoderWrapper(path)  # the defaults


def load_ours_fp32(path):
    from mteb_vllm import VllmCrossEncoderWrapper

    return VllmCrossEncoderWrapper(path, dtype="float32")


def score_ours(model, queries, docs):
    return model.score_pairs(queries, docs)


def load_builtin(path):
    from mteb.models.vllm_wrapper import VllmCrossEncoderWrapper

    return VllmCrossEncoderWrapper(path, dtype="float32", gpu_memory_utilization=0.4)


def score_builtin(model, queries, docs):
    from mteb.mocks.mock_tasks.reranking import MockRerankingTask

    return model.predict([{"text": queries}], [{"text": docs}], task_metadata=MockRerankingTask().metadata,
                         hf_split="test", hf_subset="default")


BACKENDS = {"st": (load_st, score_st), "ours": (load_ours, score_ours), "ours-fp32": (load_ours_fp32, score_ours),
            "builtin": (load_builtin, score_builtin)}
LABELS = {"st": "sentence-transformers CrossEncoder (default, float32)", "ours": "mteb-vllm, defaults",
          "ours-fp32": "mteb-vllm, dtype=float32", "builtin": "mteb built-in vLLM wrapper, dtype=float32"}


def _child(name: str, n: int, model_path: str, out_path: str) -> None:
    load, score = BACKENDS[name]
    queries, docs = make_pairs(n)
    t0 = time.perf_counter()
    model = load(model_path)
    start = time.perf_counter() - t0
    score(model, queries[:32], docs[:32])  # warm-up
    started = time.perf_counter()
    out = np.asarray(score(model, queries, docs), dtype=np.float32)
    took = time.perf_counter() - started
    np.save(out_path + ".npy", out)
    dtype = str(getattr(model, "dtype", "float32")).replace("torch.", "") if name in ("ours", "ours-fp32") \
        else "float32"
    with open(out_path + ".json", "w") as fh:
        json.dump({"seconds": took, "start_s": start, "dtype": dtype}, fh)
    os._exit(0)


def main() -> None:
    from harness import benchmark_parser, parse_benchmark_args

    parser = benchmark_parser("rerank_throughput.json")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--model-dir", default=os.path.join(tempfile.gettempdir(), "mteb_vllm_bench_cross_encoder"))
    args = parse_benchmark_args(parser)
    if args.child:
        _child(args.child, args.n, args.model_dir, args.out)
        return
    import logging

    from transformers import AutoTokenizer

    from harness import medians, run_rounds, write_json

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = build_model(args.model_dir)
    queries, docs = make_pairs(args.n)
    tok = AutoTokenizer.from_pretrained(path)
    tokens = sum(min(len(ids), 512) for ids in tok(queries, docs)["input_ids"])
    runs = run_rounds(__file__, args.backends, ["--n", str(args.n), "--model-dir", path], repeats=args.repeats)
    reference = runs["st"][0].output if "st" in runs else None
    results = {}
    for name, done in runs.items():
        stats = medians(done, ("seconds", "start_s"))
        took = stats["seconds"]["median"]
        row = {"label": LABELS[name], "dtype": done[0].timing["dtype"], **stats, "pairs_per_s": args.n / took,
               "tokens_per_s": tokens / took, "runs": [r.timing for r in done]}
        if reference is not None:
            row["max_abs_diff_vs_st"] = float(np.abs(done[0].output - reference).max())
        results[name] = row
    if "st" in results:
        for row in results.values():
            row["ratio_vs_st"] = results["st"]["seconds"]["median"] / row["seconds"]["median"]
    report = write_json(args.json, {"workload": {"pairs": args.n, "tokens": tokens}, "repeats": args.repeats,
                                    "results": results})
    for row in report["results"].values():
        print(f"{row['label']:55s} {row['dtype']:9s} {row['seconds']['median']:7.1f} s  "
              f"x{row.get('ratio_vs_st', float('nan')):.2f}  max |diff| {row.get('max_abs_diff_vs_st', 0):.1e}")


if __name__ == "__main__":
    main()
