"""Encode throughput, same 2000 texts (5-200 words), same model and dtype, one run:
sentence-transformers vs mteb's built-in VllmEncoderWrapper vs mteb-vllm. Prints texts/s, tokens/s, ratios,
engine start and the end-to-end time of a cold start + mteb.evaluate of a 3000-pair STS task per backend.
Each backend runs in its own fresh process, one after the other, ``--repeats`` rounds; medians are reported.

    .venv/bin/python benchmarks/encode_throughput.py [--n 2000] [--backends st ours builtin] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


#: Words of the generated texts: all single MiniLM tokens, so a text's word count sets its token count.
VOCAB = ("time people year way day thing man world life hand part child eye woman place work week case "
         "point government company number group problem fact river model music data search engine").split()


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(VOCAB, size=int(rng.integers(5, 201)))) for _ in range(n)]


def synthetic_sts(n_pairs: int):
    """An STS task of ``n_pairs`` generated sentence pairs (8-30 words, the size of STS12's 3108 pairs),
    for the end-to-end timing; the hub's STS12 cannot be downloaded here. Gold scores are word overlap."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    from mteb_vllm.demo import MtebVllmDemoSTS

    rng = np.random.default_rng(3)
    rows = []
    for _ in range(n_pairs):
        a = list(rng.choice(VOCAB, size=int(rng.integers(8, 31))))
        b = [w if rng.random() < 0.5 else str(rng.choice(VOCAB)) for w in a]
        overlap = len(set(a) & set(b)) / len(set(a) | set(b))
        rows.append({"sentence1": " ".join(a), "sentence2": " ".join(b), "score": 5 * overlap})

    class SyntheticSTS(AbsTaskSTS):
        metadata = TaskMetadata(**{**MtebVllmDemoSTS.metadata.model_dump(), "name": "SyntheticSTS3000",
                                   "description": "Generated sentence pairs for end-to-end timing."})
        min_score, max_score = 0, 5

        def load_data(self, num_proc=None, **kwargs):
            self.dataset = DatasetDict({"test": Dataset.from_list(rows)})
            self.data_loaded = True

    return SyntheticSTS()


def load_st(path):
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    return SentenceTransformerEncoderWrapper(path, device="cpu")


def encode_st(model, texts):
    return model.model.encode(texts, batch_size=32)


def load_ours(path):
    from mteb_vllm import VllmEncoderWrapper

    return VllmEncoderWrapper(path, model_name="sentence-transformers/all-MiniLM-L6-v2", dtype="float32")


def encode_ours(model, texts):
    return model.embed_texts(texts)


def load_builtin(path):
    from mteb.models.vllm_wrapper import VllmEncoderWrapper

    # gpu_memory_utilization: its 0.9 default fails on CPU (DEVELOPERS.md); everything else its defaults
    return VllmEncoderWrapper(path, dtype="float32", gpu_memory_utilization=0.4)


def encode_builtin(model, texts):
    from mteb.mocks.mock_tasks.sts import MockSTSTask

    return model.encode([{"text": texts}], task_metadata=MockSTSTask().metadata, hf_split="test",
                        hf_subset="default")


BACKENDS = {"st": (load_st, encode_st), "ours": (load_ours, encode_ours), "builtin": (load_builtin, encode_builtin)}


def _child(name: str, n: int, out_path: str) -> None:
    """One backend in a fresh process, so thread settings and memory of one cannot favour another.

    First what a user sees: load the model and ``mteb.evaluate`` the generated STS-3000 task, from a cold
    start (the first encode call pays for first-touch memory and kernel set-up, as a user's does). Then the
    throughput on the 2000 texts with the model already loaded and warmed up.
    """
    import mteb

    from mteb_vllm import default_model_path

    load, encode = BACKENDS[name]
    texts = make_texts(n)
    task = synthetic_sts(3000)
    t0 = time.perf_counter()
    model = load(default_model_path())
    start = time.perf_counter() - t0
    big = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
    e2e_big = time.perf_counter() - t0
    encode(model, texts[:32])  # warm-up
    started = time.perf_counter()
    out = encode(model, texts)
    took = time.perf_counter() - started
    np.save(out_path + ".npy", np.asarray(out, dtype=np.float32))
    with open(out_path + ".json", "w") as fh:
        json.dump({"seconds": took, "engine_start_s": start, "e2e_sts3000_s": e2e_big,
                   "sts3000_score": big.task_results[0].get_score()}, fh)
    os._exit(0)  # skip interpreter teardown of engine threads; results are on disk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--backends", nargs="+", default=["st", "ours", "builtin"])
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh processes per backend, interleaved; medians are reported (runs here vary 5-15 %%)")
    parser.add_argument("--json", default="benchmarks/encode_throughput.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MTEB_VLLM_NO_PROGRESS", "1")
    if args.child:
        _child(args.child, args.n, args.out)
        return
    from transformers import AutoTokenizer

    from mteb_vllm import default_model_path

    path = default_model_path()
    texts = make_texts(args.n)
    tok = AutoTokenizer.from_pretrained(path)
    tokens = sum(min(len(ids), 256) for ids in tok(texts)["input_ids"])
    runs = run_children(__file__, args.backends, ["--n", str(args.n)], repeats=args.repeats)
    results, outputs = {}, {}
    for name, done in runs.items():
        outputs[name] = done[0][1]
        timings, med = medians(done, ("seconds", "engine_start_s", "e2e_sts3000_s"))
        took = med["seconds"]
        results[name] = {**med, "texts_per_s": len(texts) / took, "tokens_per_s": tokens / took,
                         "sts3000_score": timings[0]["sts3000_score"], "runs": timings,
                         "process_wall_s": [wall for _, _, wall in done]}
        print(f"{name:8s} {took:7.1f} s  {len(texts) / took:7.1f} texts/s  {tokens / took:9.0f} tokens/s  "
              f"start {med['engine_start_s']:.1f} s  e2e STS-3000 {med['e2e_sts3000_s']:.1f} s "
              f"(medians of {len(timings)})", flush=True)
    if "st" in outputs:
        ref = outputs["st"]
        for name, out in outputs.items():
            cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
            results[name]["min_cosine_vs_st"] = float(cos.min())
            results[name]["ratio_vs_st"] = results["st"]["seconds"] / results[name]["seconds"]
            results[name]["e2e_ratio_vs_st"] = results["st"]["e2e_sts3000_s"] / results[name]["e2e_sts3000_s"]
    write_report(args.json, {"n_texts": len(texts), "tokens": tokens, "repeats": args.repeats, "results": results})


def run_children(script: str, backends: list[str], child_args: list[str],
                 repeats: int = 1) -> dict[str, list[tuple[dict, np.ndarray, float]]]:
    """Run ``script --child NAME`` for each backend, ``repeats`` rounds of one process per backend (so a slow
    spell of the machine hits every backend alike), each in its own session (see mteb_vllm.bench.run_isolated);
    return per backend each run's timing JSON, output array and process wall time."""
    import sys
    import tempfile

    from mteb_vllm.bench import run_isolated

    tmp = tempfile.mkdtemp(prefix="mteb_vllm_bench_")
    done: dict[str, list[tuple[dict, np.ndarray, float]]] = {name: [] for name in backends}
    for round_ in range(repeats):
        for name in backends:
            out = os.path.join(tmp, f"{name}-{round_}")
            wall = time.perf_counter()
            code = run_isolated([sys.executable, script, "--child", name, *child_args, "--out", out], out + ".stderr")
            if code != 0:
                raise SystemExit(f"{name} failed (exit {code}); see {out}.stderr")
            with open(out + ".json") as fh:
                done[name].append((json.load(fh), np.load(out + ".npy"), time.perf_counter() - wall))
    return done


def medians(done: list[tuple[dict, np.ndarray, float]], keys: tuple[str, ...]) -> tuple[list[dict], dict[str, float]]:
    """One backend's runs from :func:`run_children`: their timing dicts, and the median of each of ``keys``."""
    timings = [timing for timing, _, _ in done]
    return timings, {key: float(np.median([t[key] for t in timings])) for key in keys}


def write_report(path: str, body: dict) -> None:
    """Print and save ``body`` with the machine and package versions it was measured on."""
    from mteb_vllm.bench import machine_info, versions

    report = {"machine": machine_info(), "versions": versions(), **body}
    print(json.dumps(report, indent=2))
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
