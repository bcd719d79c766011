"""``mteb-vllm run``: evaluate an embedding model on tasks or a benchmark, resuming finished tasks."""

from __future__ import annotations

import argparse
import os
import sys

from .common import (
    EXIT_ERROR,
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
    resolve_model_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run", parents=[model_parser("embedding model: HF id or local path (default: the packaged "
                                     "all-MiniLM-L6-v2)"), engine_parser(), fleet_parser(), cache_parser(),
                                     common_parser()],
        help="evaluate an embedding model (default: packaged MiniLM on the demo tasks)")
    run.add_argument("--tasks", nargs="+", help="mteb task names (default: the bundled demo tasks; with "
                                                "--benchmark: the benchmark's tasks to run)")
    run.add_argument("--benchmark", help='an mteb benchmark, e.g. "MTEB(eng, v2)"')
    run.add_argument("--output-folder", default="mteb-vllm-results")
    run.add_argument("--overwrite", action="store_true",
                     help="evaluate every task again (default: tasks with complete results are kept, so a "
                          "killed run resumes where it stopped)")
    run.add_argument("--workers", type=int, default=1, metavar="K",
                     help="K worker processes, each with its own engine on its own device (GPU: one each; CPU: "
                          "disjoint cores; with --endpoint: drivers of the fleet); tasks go out largest first")
    run.add_argument("--shard", metavar="i/N",
                     help="run only shard i of N of the task list (a deterministic, cost-balanced split), for "
                          "job arrays writing one --output-folder; `mteb-vllm results` shows what is missing")
    run.add_argument("--ignore-prompt-errors", action="store_true",
                     help="when mteb's registry loader for the model cannot be reproduced on vLLM, evaluate with "
                          "mteb's default sentence-transformers setup instead (scores may differ from the reference; "
                          "results are filed under loader_default)")
    run.set_defaults(func=cmd_run)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def cmd_run(args: argparse.Namespace) -> int:
    from ..encoder import VllmEncoderWrapper
    from ..preflight import check_engine_fit, check_model_files, check_task_data, check_writable_folder
    from ..runner import run_tasks
    from ..tasks import parse_shard, select_tasks, shard_tasks
    from ..workers import plan_workers

    model, name = resolve_model_args(args)
    tasks = select_tasks(args.tasks, args.benchmark)
    if args.shard:
        index, count = parse_shard(args.shard)
        total, tasks = len(tasks), shard_tasks(tasks, index, count)
        print(f"shard {index}/{count}: {len(tasks)} of {total} task(s)", flush=True)
    plans = plan_workers(args.workers, endpoints=args.endpoints, tensor_parallel_size=args.tensor_parallel_size,
                         dtype=args.dtype) if args.workers != 1 else None
    output = check_writable_folder(args.output_folder)
    check_engine_fit(args.tensor_parallel_size, args.endpoints)
    kwargs = engine_kwargs(args)
    revision = kwargs.pop("revision", None)
    check_model_files(model, revision)
    check_task_data(tasks)
    cache_dir = cache_dir_arg(args)
    wrapper_kwargs = dict(model=model, revision=revision, model_name=name, endpoints=args.endpoints,
                          remote_options=remote_options_arg(args), ignore_prompt_errors=args.ignore_prompt_errors,
                          cache_dir=cache_dir, **kwargs)
    # lazy: the engine starts with the first text to encode, so a run whose tasks are all done starts none,
    # and with --workers this process only decides what is done and hands the rest out
    with VllmEncoderWrapper(lazy_start=True, **wrapper_kwargs) as encoder:
        meta = encoder.mteb_model_meta
        print(f"{meta.name} @ {meta.revision}, {encoder.dtype}: {len(tasks)} task(s)"
              + (f" on {len(plans)} workers" if plans else ""), flush=True)
        if cache_dir is not None:
            print(describe_cache(cache_dir), flush=True)
        summary = run_tasks(encoder, tasks, output_folder=output, overwrite=args.overwrite,
                            show_progress_bar=not os.environ.get("MTEB_VLLM_NO_PROGRESS"),
                            workers=plans, worker_kwargs=wrapper_kwargs)
        if encoder.backend.start_seconds:
            print(f"engine started in {encoder.backend.start_seconds:.1f} s")
        s = encoder.stats
        if s.seconds:
            print(f"encoded {s.texts} texts ({s.unique_texts} unique, {s.tokens} tokens, {s.truncated} truncated) "
                  f"in {s.seconds:.1f} s: {s.texts / s.seconds:,.0f} texts/s, {s.tokens / s.seconds:,.0f} tokens/s")
    cached = cache_dir is not None and any(o.computed is not None for o in summary.outcomes)
    headers = ["task", "main score", "value", "dtype", "status"] + (["cached", "computed"] if cached else [])
    print_rows(headers, [[o.task, o.metric, fmt(o.score), o.dtype or summary.dtype, o.status]
                         + ([_count(o.cached), _count(o.computed)] if cached else []) for o in summary.outcomes])
    print(f"\n{summary.line()}; results in mteb's format under {output.resolve()}")
    stats = encoder.backend.stats
    if stats is not None and (stats.cached or stats.computed):
        print(f"embeddings: {stats.line()} (cache: {cache_dir})")
    for o in summary.failed:
        print(f"mteb-vllm: {o.task} failed: {o.error}", file=sys.stderr)
    return EXIT_ERROR if summary.failed else EXIT_OK
