"""``mteb-vllm doctor``: versions, device, the precision chosen, parity and throughput, in one command."""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_OK, EXIT_PARITY, common_parser, engine_kwargs, engine_parser, model_parser


def register(sub: argparse._SubParsersAction) -> None:
    doc = sub.add_parser(
        "doctor", parents=[model_parser("HF id or local path (default: the packaged all-MiniLM-L6-v2)"),
                           engine_parser(), common_parser()],
        help="check this machine: versions, device, precision, parity with the reference, throughput")
    doc.add_argument("--texts", type=int, default=None, metavar="N",
                     help="texts the throughput check encodes (default 1000 on a GPU, 200 on a CPU; 0 skips it)")
    doc.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed main-score delta")
    doc.add_argument("--output-folder", help="also write doctor.md and doctor.json there")
    doc.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..doctor import run_doctor
    from ..errors import EngineArgumentError
    from ..preflight import check_writable_folder

    if not args.tolerance >= 0:
        raise EngineArgumentError(f"--tolerance must be a non-negative number, got {args.tolerance}")
    if args.texts is not None and args.texts < 0:
        raise EngineArgumentError(f"--texts must be 0 or more, got {args.texts}")
    out = check_writable_folder(args.output_folder) if args.output_folder else None
    engine = engine_kwargs(args)
    dtype = engine.pop("dtype", "auto")
    report = run_doctor(args.model, model_name=args.model_name, texts=args.texts, tolerance=args.tolerance, dtype=dtype,
                        engine_args=engine)
    print(report.markdown())
    if out is not None:
        (out / "doctor.md").write_text(report.markdown())
        (out / "doctor.json").write_text(report.to_json())
        print(f"report written to {out.resolve()}/doctor.md and doctor.json")
    if not report.ok:
        names = ", ".join(f"{t.task} ({t.delta:+.2e})" for t in report.parity.failed)
        print(f"mteb-vllm: doctor: parity FAILED above {args.tolerance:g} on {names}", file=sys.stderr)
        return EXIT_PARITY
    return EXIT_OK
