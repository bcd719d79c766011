"""What every ``mteb-vllm`` subcommand shares: the model and engine flags, one way to resolve the model, the
exit codes and table printing. One parent parser per group of flags, so a flag means the same everywhere."""

from __future__ import annotations

import argparse
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARITY = 0, 1, 2, 3

def add_engine_flag(group: Any, name: str, **overrides: Any) -> None:
    """``--<name>`` for the :class:`~mteb_vllm.config.EngineConfig` field ``name``: its type, default, choices and
    help text come from the field (the one declaration of the engine arguments); ``overrides`` replace them."""
    import dataclasses
    import typing

    from ..config import EngineConfig

    field = next(f for f in dataclasses.fields(EngineConfig) if f.name == name)
    kind = typing.get_type_hints(EngineConfig)[name]
    kinds = set(typing.get_args(kind)) - {type(None)} or {kind}
    options: dict[str, Any] = {"default": field.default, "help": field.metadata["help"]}
    if kinds == {bool}:
        options["action"] = argparse.BooleanOptionalAction
    elif kinds <= {int, float}:
        options["type"] = kinds.pop()
    options.update(overrides)
    if field.metadata.get("choices"):
        options["choices"] = list(field.metadata["choices"])
        options["help"] += f" Default: {options['default']}."
    group.add_argument("--" + name.replace("_", "-"), **options)


def engine_flags() -> tuple[str, ...]:
    """The engine arguments the CLI has a flag for (the fields of EngineConfig marked so)."""
    from ..config import engine_arguments

    return tuple(f.name for f in engine_arguments() if f.metadata.get("flag"))


def model_parser(model_help: str) -> argparse.ArgumentParser:
    """--model, --model-name, --revision, --trust-remote-code."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("model")
    g.add_argument("--model", help=model_help)
    g.add_argument("--model-name", help="the name mteb knows a local model by (its registry prompts/template "
                                        "apply; results are filed under it with the folder's content hash)")
    g.add_argument("--revision", help="hub revision to load (default: the one mteb's registry pins, else main)")
    add_engine_flag(g, "trust_remote_code")
    return p


def engine_parser(default_dtype: str = "auto") -> argparse.ArgumentParser:
    """The engine's flags (precision, context, step budget, memory, parallelism), made from EngineConfig's fields,
    and ``--engine-arg`` for any other vLLM engine argument."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("engine")
    for name in engine_flags():
        if name == "dtype":
            add_engine_flag(g, name, default=default_dtype)
        elif name != "trust_remote_code":  # a model flag (model_parser)
            add_engine_flag(g, name)
    g.add_argument("--engine-arg", action="append", dest="engine_args", metavar="KEY=VALUE", default=[],
                   help="any other vllm.EngineArgs field, e.g. model_impl=transformers (VALUE is read as JSON when "
                        "it parses, else as text); repeatable")
    return p


def parse_engine_args(pairs: list[str]) -> dict[str, Any]:
    """``--engine-arg KEY=VALUE`` flags as keyword arguments (checked against vLLM's fields by the wrapper)."""
    import json

    from ..errors import UsageError

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--engine-arg takes KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def fleet_parser() -> argparse.ArgumentParser:
    """Where the model runs: ``vllm serve`` endpoints instead of an in-process engine."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("fleet")
    g.add_argument("--endpoint", action="append", dest="endpoints", metavar="URL",
                   help="a `vllm serve` endpoint serving the model (repeatable); without it the model runs in "
                        "this process")
    g.add_argument("--api-key", help="key of secured endpoints (`vllm serve --api-key`), sent as a bearer token "
                                     "(default: $MTEB_VLLM_API_KEY, else $VLLM_API_KEY; the variables keep it out "
                                     "of the process list)")
    g.add_argument("--read-timeout", type=float, metavar="SECONDS",
                   help="wait at most this long for one answer; an endpoint that times out is taken out and "
                        "checked again (default: $MTEB_VLLM_READ_TIMEOUT or 120)")
    g.add_argument("--connect-timeout", type=float, metavar="SECONDS",
                   help="wait at most this long for a connection (default: $MTEB_VLLM_CONNECT_TIMEOUT or 10)")
    return p


def remote_options_arg(args: argparse.Namespace) -> Any:
    """The fleet client's options from ``--api-key``/``--read-timeout``/``--connect-timeout`` (None without
    ``--endpoint``; unset flags keep the environment's or the defaults)."""
    if not getattr(args, "endpoints", None):
        return None
    from ..backends.remote import RemoteOptions

    given = {"api_key": args.api_key, "read_timeout": args.read_timeout, "connect_timeout": args.connect_timeout}
    return RemoteOptions(**{k: v for k, v in given.items() if v is not None})


def cache_parser() -> argparse.ArgumentParser:
    """The embedding/score cache: on by default for runs, in the user cache folder."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("cache")
    g.add_argument("--cache-dir", help="keep embeddings and scores here, so reruns and killed runs compute "
                                       "nothing twice (default: ~/.cache/mteb-vllm/embeddings, or "
                                       "$MTEB_VLLM_CACHE/embeddings)")
    g.add_argument("--no-cache", action="store_true", help="compute everything; read and write no cache")
    return p


def cache_dir_arg(args: argparse.Namespace) -> str | None:
    """The cache folder a run uses, or None with ``--no-cache``."""
    from ..paths import default_embedding_cache_dir

    if getattr(args, "no_cache", False):
        return None
    return args.cache_dir or str(default_embedding_cache_dir())


def describe_cache(cache_dir: str) -> str:
    """Where the cache is and how much it holds (the CLI's default cache is never a surprise)."""
    from ..cache_store import cache_info

    info = cache_info(cache_dir)
    return (f"cache: {info.folder} ({info.entries:,} entries in {len(info.namespaces)} model namespace(s), "
            f"{info.bytes / 2**20:,.1f} MiB; --no-cache to compute everything)")


def common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--verbose", action="store_true", help="show vLLM's and mteb's logs, and tracebacks")
    return p


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Engine and model flags as wrapper keyword arguments (unset ones left out)."""
    out = {k: getattr(args, k) for k in engine_flags() if getattr(args, k, None) is not None}
    out.update(parse_engine_args(getattr(args, "engine_args", None) or []))
    if getattr(args, "revision", None):
        out["revision"] = args.revision
    return out


def resolve_model_args(args: argparse.Namespace) -> tuple[str, str | None]:
    """(model, model_name) from ``--model``/``--model-name``; no ``--model``: the packaged MiniLM, offline."""
    from ..defaults import DEFAULT_MODEL_NAME, default_model_path

    if args.model is None:
        return default_model_path(), args.model_name or DEFAULT_MODEL_NAME
    return args.model, args.model_name


def print_rows(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
