"""``mteb-vllm rerank``: the two-stage run, first-stage and reranked scores side by side."""

from __future__ import annotations

import argparse

from .common import (
    EXIT_OK,
    cache_dir_arg,
    cache_parser,
    common_parser,
    describe_cache,
    engine_kwargs,
    engine_parser,
    fleet_parser,
    fmt,
    model_parser,
    print_rows,
    remote_options_arg,
)


def _template_names() -> list[str]:
    from ..templates import TEMPLATES_BY_NAME

    return sorted(TEMPLATES_BY_NAME)


def register(sub: argparse._SubParsersAction) -> None:
    rr = sub.add_parser("rerank", parents=[model_parser("the cross-encoder or LLM reranker (HF id or local path)"),
                                           engine_parser(), fleet_parser(), cache_parser(), common_parser()],
                        help="two-stage run: first-stage retrieval, then a cross-encoder on the top k")
    rr.add_argument("--first-stage", default="bm25s",
                    help="bm25s, an embedding model (HF id or path), or 'default' for the packaged MiniLM")
    rr.add_argument("--tasks", nargs="+", help="mteb retrieval task names (default: the bundled retrieval demo)")
    rr.add_argument("--top-k", type=int, default=100, help="documents per query handed to the reranker")
    rr.add_argument("--template", choices=_template_names(), help="LLM reranker score template")
    rr.add_argument("--instruction", help="instruction for an LLM reranker template")
    rr.add_argument("--output-folder", default="mteb-vllm-results")
    rr.set_defaults(func=cmd_rerank)


def cmd_rerank(args: argparse.Namespace) -> int:
    from ..defaults import DEFAULT_MODEL_NAME, default_model_path
    from ..errors import EngineArgumentError
    from ..two_stage import BM25, rerank, resolve_tasks
    from ..preflight import check_engine_fit, check_model_files, check_task_data, check_writable_folder
    from ..templates import TEMPLATES_BY_NAME

    if not args.model:
        raise EngineArgumentError("rerank needs --model: a cross-encoder or LLM reranker (HF id or local path), "
                                  "e.g. --model cross-encoder/ms-marco-MiniLM-L6-v2")
    if args.top_k < 1:
        raise EngineArgumentError(f"--top-k must be a positive integer, got {args.top_k}")
    output = check_writable_folder(args.output_folder)
    first_stage, first_args = args.first_stage, {}
    if first_stage == "default":  # the packaged MiniLM as a dense first stage, offline
        first_stage, first_args = default_model_path(), {"model_name": DEFAULT_MODEL_NAME}
    # the same checks as `run`, before any engine starts (the reranker's own head is checked by rerank()
    # before the first stage runs)
    tasks = resolve_tasks(args.tasks)
    check_engine_fit(args.tensor_parallel_size, args.endpoints)
    engine = engine_kwargs(args)
    check_model_files(args.model, engine.get("revision"))
    if first_stage != BM25:
        check_model_files(first_stage)
    check_task_data(tasks)
    cache_dir = cache_dir_arg(args)
    if cache_dir is not None:
        engine["cache_dir"] = cache_dir
        print(describe_cache(cache_dir), flush=True)
    if first_stage != BM25:
        first_args.update({k: v for k, v in engine.items() if k not in ("revision", "trust_remote_code")})
    reranker_args = dict(engine)
    if args.endpoints:  # the fleet serves the reranker; a dense first stage still runs in this process
        reranker_args["endpoints"] = args.endpoints
        reranker_args["remote_options"] = remote_options_arg(args)
    if args.model_name:
        reranker_args["model_name"] = args.model_name
    if args.template:
        reranker_args["template"] = TEMPLATES_BY_NAME[args.template]
    if args.instruction:
        reranker_args["instruction"] = args.instruction
    run = rerank(tasks, args.model, first_stage, top_k=args.top_k, output_folder=output,
                 first_stage_args=first_args, reranker_args=reranker_args)
    rows = [[r.task, r.metric, fmt(r.first_stage), fmt(r.second_stage),
             "n/a" if r.delta is None else f"{r.delta:+.4f}"] for r in run.scores()]
    print(f"\nfirst stage: {run.first_stage_model}   reranker: {run.reranker_model}   top_k: {run.top_k}")
    print_rows(["task", "main score", "first stage", "reranked", "delta"], rows)
    print(f"\nresults of both stages saved in mteb's format under {output.resolve()}")
    return EXIT_OK
