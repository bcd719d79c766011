"""``mteb-vllm``: thin command line over the library (parse, call, print).

One module per subcommand (``register`` adds its parser, ``cmd_*`` calls the library function a Python user
would call and prints). Every subcommand builds on the same parent parsers and :func:`~.common.
resolve_model_args`, so a flag means the same thing everywhere. Failures print one line to stderr
(``--verbose`` adds the traceback) and exit with :data:`~.common.EXIT_USAGE` when the command line itself is
wrong, :data:`~.common.EXIT_ERROR` when the run could not do its work.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any

from .common import EXIT_ERROR, EXIT_USAGE

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = ("run", "rerank", "parity", "bench", "results", "cache", "serve", "doctor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mteb-vllm", description="MTEB evaluation with vLLM as the engine.")
    sub = parser.add_subparsers(dest="command")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean the command line is wrong (exit code 2), as opposed to a run that failed (1)."""
    from ..errors import ModelNotFoundError, UsageError

    return (UsageError, ModelNotFoundError)


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM or Ctrl-C: stop now, keep what is saved, leave no engine process behind.

    Why not unwind with KeyboardInterrupt: raised at an arbitrary point inside vLLM's start-up handshake, it was
    swallowed there and the client then waited forever for an engine that would never report ready. Every
    finished task's results are already on disk (mteb writes them per task; a half-written file is evaluated
    again on the rerun), so the engine's processes are terminated and this process exits at once.
    """
    from ..reaper import SIDECARS, current_child_pids, terminate

    print(f"\nmteb-vllm: interrupted ({signal.Signals(signum).name}); finished tasks are saved, run the same "
          "command again to resume", file=sys.stderr, flush=True)
    try:
        sys.stdout.flush()
    except Exception:  # a closed pipe: nothing left to flush
        pass
    terminate(sorted(current_child_pids() - SIDECARS))  # the sidecars remove the IPC files once this exits
    os._exit(128 + signum)


def _configure_output(verbose: bool) -> None:
    """Our warnings and progress bars by default; vLLM's, torch's and datasets' start-up chatter only with
    ``--verbose`` (it is one line per weight cast, a NUMA notice, deprecation warnings of vLLM's own code)."""
    if verbose:
        os.environ["MTEB_VLLM_VERBOSE"] = "1"
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if verbose else "ERROR")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # read when torch loads: this runs before that
    logging.getLogger("vllm").setLevel(logging.ERROR)
    import warnings

    for module in ("vllm", "torch", "transformers"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    try:
        import datasets

        datasets.disable_progress_bars()  # mteb's per-task "Standardizing ..." maps
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["run"]  # no arguments: the offline demo
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not getattr(args, "passthrough", False):
            parser.parse_args(argv)  # argparse's own "unrecognized arguments" message and exit code 2
        args.extra = extra
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    verbose = getattr(args, "verbose", False)
    _configure_output(verbose)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    try:
        from ..process_state import paused_gc

        with paused_gc():  # every command imports mteb first: 2.5 s with the collector running, 2.0 s paused
            import mteb  # noqa: F401
        return args.func(args)
    except Exception as exc:  # one line; the traceback only with --verbose
        if verbose:
            logging.getLogger("mteb_vllm").exception("failed")
        message = str(exc).strip() or type(exc).__name__
        print(f"mteb-vllm: error: {message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, _usage_errors()) else EXIT_ERROR
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
