"""Where a bfloat16 encode's time goes, against two yardsticks: the square-matmul peak and the model's own shapes.

``mteb-vllm bench`` reports model FLOP/s as a fraction of a 2048-square matmul's peak. This script asks why
the bf16 rows stay below it:

1. the square peak (as ``bench`` measures it) and the GFLOP/s oneDNN reaches on the linear layers the model is
   made of (MiniLM: 384 -> 1152 QKV, 384 -> 384, 384 -> 1536, 1536 -> 384) at the rows one engine step holds;
2. a ``torch.profiler`` trace of the in-process engine encoding ``bench``'s fixed-128 workload (512 texts of 128
   tokens, one call of 128 texts at a time), split into linear layers, attention, other tensor ops, and the time
   no tensor op ran (vLLM's scheduler, input preparation and pooling in Python).

    .venv/bin/python benchmarks/profile_bf16.py [--dtype bfloat16] [--json benchmarks/results/profile_bf16.json]
"""

from __future__ import annotations

import argparse
import os
import time


def shape_peaks(dtype: str, rows: int, layers: list[tuple[int, int]], seconds: float = 1.0) -> dict[str, float]:
    """Best GFLOP/s of ``x @ W.T`` for each (in, out) layer shape at ``rows`` rows."""
    import torch

    from mteb_vllm.flops import best_gflops

    torch_dtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for k, n in layers:
        x = torch.randn(rows, k, generator=gen).to(torch_dtype)
        w = torch.randn(n, k, generator=gen).to(torch_dtype)
        out[f"{k}x{n}"] = best_gflops(lambda: torch.nn.functional.linear(x, w), 2 * rows * k * n, seconds)
    return out


def _category(name: str) -> str:
    lowered = name.lower()
    if any(s in lowered for s in ("linear", "addmm", "aten::mm", "matmul", "onednn", "gemm", "bmm")):
        return "linear layers"
    if any(s in lowered for s in ("attention", "attn", "sdpa", "softmax", "flash")):
        return "attention"
    if any(s in lowered for s in ("layer_norm", "layernorm", "rms_norm")):
        return "layer norm"
    if "gelu" in lowered or "silu" in lowered:
        return "activation"
    return "other tensor ops"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--json", default="benchmarks/results/profile_bf16.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MTEB_VLLM_NO_PROGRESS", "1")
    import torch
    from torch.profiler import ProfilerActivity, profile

    from mteb_vllm import VllmEncoderWrapper, default_model_path
    from harness import write_json
    from mteb_vllm.flops import matmul_peak_gflops
    from mteb_vllm.checkpoint import model_shape
    from mteb_vllm.workloads import fixed_texts

    path = default_model_path()
    shape = model_shape(path)
    texts = fixed_texts(args.n, 128)
    model = VllmEncoderWrapper(path, model_name="sentence-transformers/all-MiniLM-L6-v2", dtype=args.dtype)
    model.embed_texts(texts[: args.batch])  # warm-up
    started = time.perf_counter()
    for i in range(0, args.n, args.batch):
        model.embed_texts(texts[i: i + args.batch])
    plain_s = time.perf_counter() - started
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for i in range(0, args.n, args.batch):
            model.embed_texts(texts[i: i + args.batch])
        profiled_s = time.perf_counter() - started
    model.close()

    # Self time per op (no double counting of nested ops), summed by category.
    by_category: dict[str, float] = {}
    top = []
    for event in prof.key_averages():
        self_s = event.self_cpu_time_total / 1e6
        if self_s <= 0:
            continue
        by_category[_category(event.key)] = by_category.get(_category(event.key), 0.0) + self_s
        top.append((self_s, event.key, event.count))
    # The in-process engine runs its forward passes on this thread (an op's OpenMP threads are inside its
    # event), so self times add up to wall time on this thread.
    threads = torch.get_num_threads()
    op_wall = sum(by_category.values())
    tokens = args.n * 128
    flops = shape.forward_flops(128) * args.n
    hidden, ffn = 384, 1536
    layers = [(hidden, 3 * hidden), (hidden, hidden), (hidden, ffn), (ffn, hidden)]
    peaks = shape_peaks(args.dtype, 4096, layers)
    weights = [k * n for k, n in layers]
    # The linear layers' FLOP-weighted ceiling: time = sum(flops_i / peak_i).
    shape_peak = sum(weights) / sum(w / peaks[f"{k}x{n}"] for w, (k, n) in zip(weights, layers))
    square = matmul_peak_gflops(args.dtype)
    achieved = flops / plain_s / 1e9
    report = {
        "dtype": args.dtype, "workload": f"{args.n} texts x 128 tokens, calls of {args.batch}",
        "seconds": plain_s, "profiled_seconds": profiled_s, "tokens_per_s": tokens / plain_s,
        "model_gflops_per_s": achieved, "square_peak_gflops": square, "shape_peaks_gflops": peaks,
        "model_shape_linear_peak_gflops": shape_peak, "fraction_of_square_peak": achieved / square,
        "fraction_of_shape_peak": achieved / shape_peak, "torch_threads": threads,
        "op_seconds_by_category": by_category,
        "share_of_wall": {k: v / profiled_s for k, v in by_category.items()},
        "no_tensor_op_share": max(0.0, 1 - op_wall / profiled_s),
        "top_ops": [{"op": k, "self_s": s, "calls": c} for s, k, c in sorted(top, reverse=True)[:15]],
    }
    write_json(args.json, report)
    print(f"{args.dtype}: {tokens / plain_s:,.0f} tokens/s, {achieved:.0f} GFLOP/s = "
          f"{100 * achieved / square:.0f} % of the {square:.0f} GFLOP/s square peak, "
          f"{100 * achieved / shape_peak:.0f} % of the {shape_peak:.0f} GFLOP/s the model's linear shapes reach")
    for k, v in sorted(report["share_of_wall"].items(), key=lambda kv: -kv[1]):
        print(f"  {k:18s} {100 * v:5.1f} % of wall")
    print(f"  {'no tensor op':18s} {100 * report['no_tensor_op_share']:5.1f} % of wall")
    for row in report["top_ops"][:10]:
        print(f"    {row['self_s']:7.3f} s  {row['calls']:6d}x  {row['op']}")


if __name__ == "__main__":
    main()
