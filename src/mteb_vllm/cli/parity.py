"""``mteb-vllm parity``: the same tasks through mteb's reference and through vLLM, compared."""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_OK, EXIT_PARITY, common_parser, engine_kwargs, engine_parser, model_parser


def register(sub: argparse._SubParsersAction) -> None:
    par = sub.add_parser("parity", parents=[model_parser(
        "HF id or local path (default: the packaged all-MiniLM-L6-v2)"), engine_parser("float32"), common_parser()],
        help="same tasks through mteb's reference and through vLLM; compare scores")
    par.add_argument("--tasks", nargs="+", help="mteb task names (default: the bundled demo tasks)")
    par.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed main-score delta")
    par.add_argument("--prompt", action="append", metavar="KEY=TEXT",
                     help="a prompt for our side only (keys as mteb's model_prompts), to test a configuration")
    par.add_argument("--output-folder", default="mteb-vllm-parity")
    par.set_defaults(func=cmd_parity)


def parse_prompts(items: list[str] | None) -> dict[str, str] | None:
    from ..errors import EngineArgumentError

    if not items:
        return None
    prompts = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise EngineArgumentError(f"--prompt takes KEY=TEXT (e.g. query='query: '), got {item!r}")
        prompts[key] = text
    return prompts


def cmd_parity(args: argparse.Namespace) -> int:
    from ..errors import EngineArgumentError
    from ..parity import run_parity
    from ..preflight import check_writable_folder

    if not args.tolerance >= 0:  # also refuses NaN
        raise EngineArgumentError(f"--tolerance must be a non-negative number, got {args.tolerance}")
    prompts = parse_prompts(args.prompt)
    out = check_writable_folder(args.output_folder)
    engine = {k: v for k, v in engine_kwargs(args).items() if k != "dtype"}
    report = run_parity(args.model, model_name=args.model_name, tasks=args.tasks, dtype=args.dtype,
                        tolerance=args.tolerance, prompt_dict=prompts, engine_args=engine)
    (out / "parity.json").write_text(report.to_json())
    (out / "parity.md").write_text(report.markdown())
    print(report.markdown())
    print(f"report written to {out.resolve()}/parity.md and parity.json")
    if report.failed:
        names = ", ".join(f"{t.task} ({t.delta:+.2e})" for t in report.failed)
        print(f"mteb-vllm: parity FAILED: main-score delta above {args.tolerance:g} on {names}", file=sys.stderr)
        return EXIT_PARITY
    return EXIT_OK
