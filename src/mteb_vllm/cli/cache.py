"""``mteb-vllm cache info|verify|compact|clear``: what the embedding/score cache holds, and its upkeep.

Every action touches only the files the cache created (see :mod:`mteb_vllm.cache_store`); other files in the
folder are listed and left alone.
"""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_ERROR, EXIT_OK, common_parser, print_rows


def register(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser("cache", parents=[common_parser()], help="show, check, compact or clear the "
                                                                     "embedding/score cache")
    cache.add_argument("action", choices=["info", "verify", "compact", "clear"],
                       help="info: namespaces per model with what computed them (backend, device, vLLM, torch), "
                            "entries and size; verify: structure and every entry's checksum (--repair fixes what "
                            "it finds); compact: reclaim space; clear: delete. Only files the cache created are "
                            "touched")
    cache.add_argument("--cache-dir", help="the cache folder (default: ~/.cache/mteb-vllm/embeddings, or "
                                           "$MTEB_VLLM_CACHE/embeddings)")
    cache.add_argument("--model", help="clear: only the namespaces of this model, named exactly as `cache info` "
                                       "lists it (e.g. intfloat/e5-small), or by a shell pattern with * ? [ ] "
                                       "(e.g. 'intfloat/*'); never a substring match. An empty value is refused")
    cache.add_argument("--repair", action="store_true",
                       help="verify: delete damaged entries, rebuild a damaged file from its readable entries, and "
                            "put back the readable entries of damaged files a run moved aside; exits 1 if "
                            "something cannot be repaired, and says why")
    cache.set_defaults(func=cmd_cache)


def _foreign_note(foreign: list) -> str:
    names = ", ".join(p.name for p in foreign[:5]) + (" ..." if len(foreign) > 5 else "")
    return f"{len(foreign)} file(s) here were not created by mteb-vllm and were left alone: {names}"


def cmd_cache(args: argparse.Namespace) -> int:
    from ..cache_store import cache_info, clear_cache, compact_cache, verify_cache
    from ..errors import UsageError
    from ..paths import default_embedding_cache_dir

    folder = args.cache_dir or str(default_embedding_cache_dir())
    if args.model is not None and args.action != "clear":
        raise UsageError("--model applies to `cache clear` only")
    if args.model is not None and not args.model.strip():
        raise UsageError("--model is empty: name a model exactly as `mteb-vllm cache info` lists it, or give a "
                         "pattern such as 'intfloat/*'; leave --model out to clear the whole cache")
    info = cache_info(folder)
    if not info.namespaces and not info.damaged_copies and info.foreign:
        print(f"{info.folder} is not an mteb-vllm cache folder: {_foreign_note(info.foreign)}", file=sys.stderr)
        return EXIT_ERROR
    if args.action == "info":
        print_rows(["model", "revision", "dtype", "backend", "device", "vLLM", "torch", "entries", "MiB",
                    "namespace"],
                   [[n.name or n.model, n.revision or "?", n.dtype, n.backend, n.engine.get("device", "-"),
                     n.vllm or "-", n.engine.get("torch", "-"), f"{n.entries:,}", f"{n.bytes / 2**20:,.1f}",
                     n.fingerprint + ("" if n.current else f" (format {n.format or '?'}, not used)")]
                    for n in info.namespaces])
        print(f"\n{info.folder}: {info.entries:,} entries, {info.bytes / 2**20:,.1f} MiB")
        old = [n for n in info.namespaces if not n.current]
        if old:
            print(f"{len(old)} namespace(s) of an older cache format are never read by this version "
                  "(`mteb-vllm cache clear` removes them)")
        if info.damaged_copies:
            print(f"{len(info.damaged_copies)} damaged file(s) moved aside, {info.damaged_bytes / 2**20:,.1f} MiB "
                  "(never read; `mteb-vllm cache verify --repair` recovers their readable entries, "
                  "`mteb-vllm cache clear` removes them)")
        if info.foreign:
            print(_foreign_note(info.foreign))
        return EXIT_OK
    if args.action == "verify":
        reports = verify_cache(folder, repair=args.repair)
        print_rows(["namespace", "model", "entries", "damaged", "structure"] + (["repair"] if args.repair else []),
                   [[r.fingerprint, r.name, f"{r.entries:,}", str(r.damaged), r.structure]
                    + ([r.action or "-"] if args.repair else []) for r in reports])
        unhealthy = [r for r in reports if not r.healthy]
        if unhealthy and not args.repair:
            print("\ndamaged entries and files are never read (they are computed again); --repair deletes damaged "
                  "entries and rebuilds damaged files from their readable entries")
        elif unhealthy:
            print(f"\n{len(unhealthy)} could not be repaired (see the repair column)", file=sys.stderr)
        if info.foreign:
            print(_foreign_note(info.foreign))
        return EXIT_ERROR if unhealthy else EXIT_OK
    if args.action == "compact":
        print(f"freed {compact_cache(folder) / 2**20:,.1f} MiB in {folder}")
        if info.foreign:
            print(_foreign_note(info.foreign))
        return EXIT_OK
    report = clear_cache(folder, model=args.model)
    print(f"removed {report.removed} namespace(s)"
          + (f" and {report.damaged_removed} damaged cop{'y' if report.damaged_removed == 1 else 'ies'}"
             if report.damaged_removed else "") + f" from {folder}")
    if args.model is not None and not report.removed:
        names = sorted({n.name or n.model for n in info.namespaces})
        print(f"no namespace of a model named {args.model!r}; the models here: {', '.join(names) or 'none'}",
              file=sys.stderr)
    if report.foreign:
        print(_foreign_note(report.foreign))
    return EXIT_OK
