"""``mteb-vllm bench``: throughput and latency of vLLM, sentence-transformers and mteb's built-in wrapper."""

from __future__ import annotations

import argparse
import os
import sys

from .common import EXIT_ERROR, EXIT_OK, common_parser, model_parser, resolve_model_args


def register(sub: argparse._SubParsersAction) -> None:
    from ..bench import BACKENDS

    ben = sub.add_parser("bench", parents=[model_parser(
        "HF id or local path (default: the packaged all-MiniLM-L6-v2)"), common_parser()],
        help="throughput/latency of vLLM vs sentence-transformers vs mteb's wrapper")
    ben.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    ben.add_argument("--dtypes", nargs="+", default=["auto", "float32"],
                     choices=["auto", "float32", "bfloat16", "float16"],
                     help="precisions to measure; auto is what each backend does with no dtype given (the row a "
                          "user gets); default: auto float32")
    ben.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 32, 128])
    ben.add_argument("--input-len", type=int, help="fixed input length in tokens")
    ben.add_argument("--variable-length", action="store_true", help="texts of 5-200 words")
    ben.add_argument("--n", type=int, default=512, help="texts per workload")
    ben.add_argument("--output-folder", default="mteb-vllm-bench")
    ben.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import BenchConfig, markdown_report, run_bench

    model, name = resolve_model_args(args)
    config = BenchConfig(model=model, model_name=name, backends=args.backends, dtypes=args.dtypes,
                         batch_sizes=args.batch_sizes, input_len=args.input_len,
                         variable_length=args.variable_length, n=args.n, output_folder=args.output_folder,
                         trust_remote_code=args.trust_remote_code)
    report = run_bench(config)
    print(markdown_report(report))
    print(f"JSON, markdown and plot written to {os.path.abspath(args.output_folder)}")
    for failure in report["failed"]:
        print(f"mteb-vllm: bench {failure['backend']} {failure['dtype']} FAILED: {failure['error']}", file=sys.stderr)
    return EXIT_ERROR if report["failed"] or not report["points"] else EXIT_OK
