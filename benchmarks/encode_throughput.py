"""Encode throughput, same 2000 texts (5-200 words), same model and dtype, one run:
sentence-transformers vs mteb's built-in VllmEncoderWrapper vs mteb-vllm. Prints texts/s, tokens/s, ratios.

    .venv/bin/python benchmarks/encode_throughput.py [--n 2000] [--backends st ours builtin]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = ("time people year way day thing man world life hand part child eye woman place work week case "
             "point government company number group problem fact river model music data search engine").split()
    return [" ".join(rng.choice(vocab, size=int(rng.integers(5, 201)))) for _ in range(n)]


def bench_st(path, texts):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    started = time.perf_counter()
    out = model.encode(texts, batch_size=32)
    return time.perf_counter() - started, np.asarray(out), 0.0


def bench_ours(path, texts):
    from mteb_vllm import VllmEncoderWrapper

    t0 = time.perf_counter()
    wrapper = VllmEncoderWrapper(path, model_name="sentence-transformers/all-MiniLM-L6-v2", dtype="float32")
    start = time.perf_counter() - t0
    started = time.perf_counter()
    out = wrapper.embed_texts(texts)
    took = time.perf_counter() - started
    wrapper.close()
    return took, out, start


def bench_builtin(path, texts):
    from mteb.models.vllm_wrapper import VllmEncoderWrapper
    from mteb.mocks.mock_tasks.sts import MockSTSTask

    t0 = time.perf_counter()
    wrapper = VllmEncoderWrapper(path, dtype="float32", gpu_memory_utilization=0.4, enforce_eager=True)
    start = time.perf_counter() - t0
    started = time.perf_counter()
    out = wrapper.encode([{"text": texts}], task_metadata=MockSTSTask().metadata, hf_split="test", hf_subset="default")
    took = time.perf_counter() - started
    wrapper.cleanup()
    return took, np.asarray(out), start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--backends", nargs="+", default=["st", "ours", "builtin"])
    parser.add_argument("--json", default="benchmarks/encode_throughput.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MTEB_VLLM_NO_PROGRESS", "1")
    from transformers import AutoTokenizer

    from mteb_vllm import default_model_path

    path = default_model_path()
    texts = make_texts(args.n)
    tok = AutoTokenizer.from_pretrained(path)
    tokens = sum(min(len(ids), 256) for ids in tok(texts)["input_ids"])
    runs = {"st": bench_st, "ours": bench_ours, "builtin": bench_builtin}
    results, outputs = {}, {}
    for name in args.backends:
        took, out, start = runs[name](path, texts)
        outputs[name] = out
        results[name] = {"seconds": took, "texts_per_s": len(texts) / took, "tokens_per_s": tokens / took,
                         "engine_start_s": start}
    if "st" in outputs:
        ref = outputs["st"]
        for name, out in outputs.items():
            cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
            results[name]["min_cosine_vs_st"] = float(cos.min())
            results[name]["ratio_vs_st"] = results["st"]["seconds"] / results[name]["seconds"]
    report = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
              "n_texts": len(texts), "tokens": tokens, "results": results}
    print(json.dumps(report, indent=2))
    with open(args.json, "w") as fh:
        json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
