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

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from encode_throughput import make_texts, medians, run_children, write_report  # noqa: E402


def make_pairs(n: int, seed: int = 1) -> tuple[list[str], list[str]]:
    """20 documents per query, documents 5-200 words, queries 3-15 words (a reranking workload)."""
    docs = make_texts(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    queries = [" ".join(q.split()[: int(rng.integers(3, 16))]) for q in make_texts(max(1, n // 20), seed=seed + 2)]
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


BACKENDS = {"st": (load_st, score_st), "ours": (load_ours, score_ours), "builtin": (load_builtin, score_builtin)}


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
    with open(out_path + ".json", "w") as fh:
        json.dump({"seconds": took, "engine_start_s": start}, fh)
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--backends", nargs="+", default=["st", "ours", "builtin"])
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh processes per backend, interleaved; medians are reported")
    parser.add_argument("--json", default="benchmarks/rerank_throughput.json")
    parser.add_argument("--model-dir", default=os.path.join(tempfile.gettempdir(), "mteb_vllm_bench_cross_encoder"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MTEB_VLLM_NO_PROGRESS", "1")
    if args.child:
        _child(args.child, args.n, args.model_dir, args.out)
        return
    from transformers import AutoTokenizer

    path = build_model(args.model_dir)
    queries, docs = make_pairs(args.n)
    tok = AutoTokenizer.from_pretrained(path)
    tokens = sum(min(len(ids), 512) for ids in tok(queries, docs)["input_ids"])
    results, outputs = {}, {}
    runs = run_children(__file__, args.backends, ["--n", str(args.n), "--model-dir", path], repeats=args.repeats)
    for name, done in runs.items():
        outputs[name] = done[0][1]
        timings, med = medians(done, ("seconds", "engine_start_s"))
        took, start = med["seconds"], med["engine_start_s"]
        results[name] = {"seconds": took, "pairs_per_s": args.n / took, "tokens_per_s": tokens / took,
                         "engine_start_s": start, "runs": timings}
        print(f"{name:8s} {took:7.1f} s  {args.n / took:7.1f} pairs/s  {tokens / took:9.0f} tokens/s  "
              f"start {start:.1f} s (medians of {len(timings)})", flush=True)
    if "st" in outputs:
        for name, out in outputs.items():
            results[name]["max_abs_diff_vs_st"] = float(np.abs(out - outputs["st"]).max())
            results[name]["ratio_vs_st"] = results["st"]["seconds"] / results[name]["seconds"]
    write_report(args.json, {"n_pairs": args.n, "tokens": tokens, "repeats": args.repeats, "results": results})


if __name__ == "__main__":
    main()
