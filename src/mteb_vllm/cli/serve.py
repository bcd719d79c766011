"""``mteb-vllm serve MODEL``: ``vllm serve`` with the settings our local engine uses, printed, then run."""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_ERROR, EXIT_OK, add_engine_flag, common_parser, engine_kwargs, engine_parser


def _template_names() -> list[str]:
    from ..templates import TEMPLATES_BY_NAME

    return sorted(TEMPLATES_BY_NAME)


def register(sub: argparse._SubParsersAction) -> None:
    srv = sub.add_parser(
        "serve", parents=[engine_parser(), common_parser()],
        help="start `vllm serve` for a model exactly as mteb-vllm runs it locally (prints the command)",
        description="Everything after the known flags is passed to `vllm serve` (e.g. -dp 8 for 8 GPUs).")
    srv.add_argument("model", help="HF id or local path; clients pass the same string as --model")
    srv.add_argument("--task", choices=["embed", "classify"], default="embed",
                     help="embed (embedding models) or classify (rerankers)")
    srv.add_argument("--template", choices=_template_names(), help="LLM reranker score template (classify)")
    srv.add_argument("--revision")
    srv.add_argument("--model-name", help="the name mteb knows a local model by")
    add_engine_flag(srv, "trust_remote_code")
    srv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only; "
                                                          "0.0.0.0 for a fleet)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--dry-run", action="store_true", help="print the command and exit")
    srv.set_defaults(func=cmd_serve, passthrough=True)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve import plan_server, run_server
    from ..templates import TEMPLATES_BY_NAME

    engine = {k: v for k, v in engine_kwargs(args).items() if k not in ("revision", "trust_remote_code")}
    plan = plan_server(args.model, task=args.task, template=TEMPLATES_BY_NAME[args.template] if args.template
                       else None, revision=args.revision, model_name=args.model_name,
                       trust_remote_code=args.trust_remote_code, host=args.host, port=args.port,
                       extra_args=list(getattr(args, "extra", [])), **engine)
    print(plan.shell(), flush=True)
    print(f"# clients: mteb-vllm run --model {args.model} --endpoint {plan.url}"
          + ("" if plan.dtype == "auto" else f" --dtype {plan.dtype}") + "  (repeat --endpoint per server)",
          flush=True)
    if args.dry_run:
        return EXIT_OK
    code = run_server(plan)  # the first Ctrl-C, SIGTERM or SIGHUP stops it with its engine processes
    if code >= 128:
        return code
    if code:
        print(f"mteb-vllm: vllm serve exited with code {code} (its output is above)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK
