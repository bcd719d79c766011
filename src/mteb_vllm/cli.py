"""``mteb-vllm``: thin command line over the library (parse, call, print)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _add_engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--max-num-batched-tokens", type=int)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--verbose", action="store_true", help="show vLLM's and mteb's logs")


def _engine_kwargs(args: argparse.Namespace) -> dict:
    keys = ("dtype", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization",
            "tensor_parallel_size", "enforce_eager")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def _resolve_tasks(names: list[str] | None, benchmark: str | None) -> list:
    import mteb

    from .demo import demo_tasks, get_tasks

    if benchmark:
        return list(mteb.get_benchmark(benchmark).tasks)
    if not names:
        return demo_tasks()
    return get_tasks(names)


def _print_rows(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _print_table(rows: list[tuple[str, str, float]]) -> None:
    _print_rows(["task", "main score", "value"], [[t, m, _fmt(v)] for t, m, v in rows])


def cmd_run(args: argparse.Namespace) -> int:
    import mteb
    from mteb.cache import ResultCache

    from .defaults import DEFAULT_MODEL_NAME, default_model_path
    from .encoder import VllmEncoderWrapper

    model, name = args.model, args.model_name
    if model is None:
        model, name = default_model_path(), name or DEFAULT_MODEL_NAME
    tasks = _resolve_tasks(args.tasks, args.benchmark)
    with VllmEncoderWrapper(model, model_name=name, **_engine_kwargs(args)) as encoder:
        print(f"engine ready in {getattr(encoder.backend, 'start_seconds', 0):.1f} s; evaluating {len(tasks)} task(s)")
        result = mteb.evaluate(encoder, tasks, cache=ResultCache(args.output_folder), overwrite_strategy="always")
        s = encoder.stats
        if s.seconds:
            print(f"encoded {s.texts} texts ({s.unique_texts} unique, {s.tokens} tokens, {s.truncated} truncated) "
                  f"in {s.seconds:.1f} s: {s.texts / s.seconds:,.0f} texts/s, {s.tokens / s.seconds:,.0f} tokens/s")
    main_scores = {t.metadata.name: t.metadata.main_score for t in tasks}
    _print_table([(r.task_name, main_scores.get(r.task_name, "main_score"), r.get_score())
                  for r in result.task_results])
    print(f"\nresults saved in mteb's format under {os.path.abspath(args.output_folder)}")
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    from .defaults import DEFAULT_MODEL_NAME, default_model_path
    from .pipeline import BM25, rerank
    from .templates import TEMPLATES_BY_NAME

    if not args.model:
        raise ValueError("rerank needs --model: a cross-encoder or LLM reranker (HF id or local path), "
                         "e.g. --model cross-encoder/ms-marco-MiniLM-L6-v2")
    first_stage, first_args = args.first_stage, {}
    if first_stage == "default":  # the packaged MiniLM as a dense first stage, offline
        first_stage, first_args = default_model_path(), {"model_name": DEFAULT_MODEL_NAME}
    if first_stage != BM25:
        first_args.update(_engine_kwargs(args))
    reranker_args = _engine_kwargs(args)
    if args.model_name:
        reranker_args["model_name"] = args.model_name
    if args.template:
        reranker_args["template"] = TEMPLATES_BY_NAME[args.template]
    if args.instruction:
        reranker_args["instruction"] = args.instruction
    run = rerank(args.tasks, args.model, first_stage, top_k=args.top_k, output_folder=args.output_folder,
                 first_stage_args=first_args, reranker_args=reranker_args)
    rows = [[r.task, r.metric, _fmt(r.first_stage), _fmt(r.second_stage),
             "n/a" if r.delta is None else f"{r.delta:+.4f}"] for r in run.scores()]
    print(f"\nfirst stage: {run.first_stage_model}   reranker: {run.reranker_model}   top_k: {run.top_k}")
    _print_rows(["task", "main score", "first stage", "reranked", "delta"], rows)
    print(f"\nresults of both stages saved in mteb's format under {os.path.abspath(args.output_folder)}")
    return 0


def _parse_prompts(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    prompts = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--prompt takes KEY=TEXT (e.g. query='query: '), got {item!r}")
        prompts[key] = text
    return prompts


def cmd_parity(args: argparse.Namespace) -> int:
    from .parity import run_parity

    engine = {k: v for k, v in _engine_kwargs(args).items() if k != "dtype"}
    report = run_parity(args.model, model_name=args.model_name, tasks=args.tasks, dtype=args.dtype,
                        tolerance=args.tolerance, prompt_dict=_parse_prompts(args.prompt), engine_args=engine)
    out = os.path.abspath(args.output_folder)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "parity.json"), "w") as fh:
        fh.write(report.to_json())
    with open(os.path.join(out, "parity.md"), "w") as fh:
        fh.write(report.markdown())
    print(report.markdown())
    print(f"report written to {out}/parity.md and parity.json")
    if report.failed:
        names = ", ".join(f"{t.task} ({t.delta:+.2e})" for t in report.failed)
        print(f"mteb-vllm: parity FAILED: main-score delta above {args.tolerance:g} on {names}", file=sys.stderr)
        return 3
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchConfig, run_bench
    from .defaults import DEFAULT_MODEL_NAME, default_model_path

    model, name = args.model, args.model_name
    if model is None:
        model, name = default_model_path(), name or DEFAULT_MODEL_NAME
    config = BenchConfig(model=model, model_name=name, backends=args.backends, dtypes=args.dtypes,
                         batch_sizes=args.batch_sizes, input_len=args.input_len,
                         variable_length=args.variable_length, n=args.n, output_folder=args.output_folder)
    report = run_bench(config)
    from .bench import markdown_report

    print(markdown_report(report))
    print(f"JSON, markdown and plot written to {os.path.abspath(args.output_folder)}")
    return 0 if report["points"] else 1


def _template_names() -> list[str]:
    from .templates import TEMPLATES_BY_NAME

    return list(TEMPLATES_BY_NAME)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mteb-vllm", description="MTEB evaluation with vLLM as the engine.")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="evaluate an embedding model (default: packaged MiniLM on the demo tasks)")
    run.add_argument("--model", help="HF id or local path (default: packaged all-MiniLM-L6-v2)")
    run.add_argument("--model-name", help="name mteb knows a local model by (registry prompts, results folder)")
    run.add_argument("--tasks", nargs="+", help="mteb task names (default: the bundled demo tasks)")
    run.add_argument("--benchmark", help='an mteb benchmark, e.g. "MTEB(eng, v2)"')
    run.add_argument("--output-folder", default="mteb-vllm-results")
    _add_engine_flags(run)
    run.set_defaults(func=cmd_run)

    rr = sub.add_parser("rerank", help="two-stage run: first-stage retrieval, then a cross-encoder on the top k")
    rr.add_argument("--model", help="the cross-encoder or LLM reranker (HF id or local path)")
    rr.add_argument("--model-name", help="name mteb knows a local reranker by (registry template, results folder)")
    rr.add_argument("--first-stage", default="bm25s",
                    help="bm25s, an embedding model (HF id or path), or 'default' for the packaged MiniLM")
    rr.add_argument("--tasks", nargs="+", help="mteb retrieval task names (default: the bundled retrieval demo)")
    rr.add_argument("--top-k", type=int, default=100, help="documents per query handed to the reranker")
    rr.add_argument("--template", choices=sorted(_template_names()), help="LLM reranker score template")
    rr.add_argument("--instruction", help="instruction for an LLM reranker template")
    rr.add_argument("--output-folder", default="mteb-vllm-results")
    _add_engine_flags(rr)
    rr.set_defaults(func=cmd_rerank)

    par = sub.add_parser("parity", help="same tasks through mteb's reference and through vLLM; compare scores")
    par.add_argument("--model", help="HF id or local path (default: packaged all-MiniLM-L6-v2)")
    par.add_argument("--model-name", help="name mteb knows a local model by")
    par.add_argument("--tasks", nargs="+", help="mteb task names (default: the bundled demo tasks)")
    par.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed main-score delta")
    par.add_argument("--prompt", action="append", metavar="KEY=TEXT",
                     help="a prompt for our side only (keys as mteb's model_prompts), to test a configuration")
    par.add_argument("--output-folder", default="mteb-vllm-parity")
    _add_engine_flags(par)
    par.set_defaults(func=cmd_parity, dtype="float32")

    from .bench import BACKENDS

    ben = sub.add_parser("bench", help="throughput/latency of vLLM vs sentence-transformers vs mteb's wrapper")
    ben.add_argument("--model", help="HF id or local path (default: packaged all-MiniLM-L6-v2)")
    ben.add_argument("--model-name", help="name mteb knows a local model by")
    ben.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    ben.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"])
    ben.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 32, 128])
    ben.add_argument("--input-len", type=int, help="fixed input length in tokens")
    ben.add_argument("--variable-length", action="store_true", help="texts of 5-200 words")
    ben.add_argument("--n", type=int, default=512, help="texts per workload")
    ben.add_argument("--output-folder", default="mteb-vllm-bench")
    ben.add_argument("--verbose", action="store_true")
    ben.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["run"]  # no arguments: the offline demo
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    verbose = getattr(args, "verbose", False)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if verbose else "ERROR")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .errors import MtebVllmError
    from .gc_pause import paused_gc

    with paused_gc():  # every command imports mteb first: 2.5 s with the collector running, 2.0 s paused
        import mteb  # noqa: F401
    try:
        return args.func(args)
    except (MtebVllmError, ImportError, ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        print(f"mteb-vllm: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # `python -m mteb_vllm.cli`; the guard vLLM's spawned workers need
    sys.exit(main())
