"""``mteb-vllm results FOLDER``: the scores in a results folder, and what a benchmark still lacks there."""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_ERROR, EXIT_OK, common_parser, fmt, print_rows


def register(sub: argparse._SubParsersAction) -> None:
    res = sub.add_parser("results", parents=[common_parser()],
                         help="table of the results in a folder; with --benchmark/--tasks, what is missing")
    res.add_argument("folder", help="an --output-folder of mteb-vllm run (mteb's ResultCache layout); a folder "
                                    "without mteb results is refused (exit code 2)")
    res.add_argument("--benchmark", help='list the tasks of this mteb benchmark that each run lacks')
    res.add_argument("--tasks", nargs="+", help="list which of these tasks each run lacks")
    res.set_defaults(func=cmd_results)


def cmd_results(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..results import collect_results
    from ..tasks import select_tasks

    if not __import__("pathlib").Path(args.folder).expanduser().is_dir():
        raise UsageError(f"{args.folder!r} is not a folder; pass the --output-folder of a run")
    expected = [t.metadata.name for t in select_tasks(args.tasks, args.benchmark)] \
        if (args.benchmark or args.tasks) else None
    table = collect_results(args.folder, expected)
    if not table.rows:
        print(f"no results under {table.folder}")
        return EXIT_ERROR if expected else EXIT_OK
    print_rows(["run", "task", "main score", "value"],
               [[str(r.run), r.task, r.metric, "NaN (invalid)" if r.problem and r.score is not None else fmt(r.score)]
                for r in table.rows])
    incomplete = [r for r in table.rows if r.problem]
    for run, tasks in table.missing.items():
        print(f"\n{run}: {len(tasks)} of {len(expected or [])} task(s) missing or invalid: {' '.join(tasks)}")
    if expected is not None and not table.missing:
        print(f"\nevery run has all {len(expected)} task(s)")
    if incomplete and expected is None:
        print(f"\n{len(incomplete)} result file(s) unreadable or without a valid main score: "
              + " ".join(f"{r.run} {r.task}" for r in incomplete))
    if table.missing or incomplete:
        print("\nrun the same `mteb-vllm run` command again to evaluate what is missing or invalid", file=sys.stderr)
    return EXIT_ERROR if table.missing or incomplete else EXIT_OK
