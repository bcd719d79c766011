"""``mteb-vllm cache info|verify|compact|clear``: what the embedding/score cache holds, and its upkeep."""

from __future__ import annotations

import argparse

from .common import EXIT_ERROR, EXIT_OK, common_parser, print_rows


def register(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser("cache", parents=[common_parser()], help="show, check, compact or clear the "
                                                                     "embedding/score cache")
    cache.add_argument("action", choices=["info", "verify", "compact", "clear"],
                       help="info: namespaces, entries and size per model; verify: structure and every entry's "
                            "checksum (--repair deletes damaged entries); compact: reclaim space; clear: delete")
    cache.add_argument("--cache-dir", help="the cache folder (default: ~/.cache/mteb-vllm/embeddings, or "
                                           "$MTEB_VLLM_CACHE/embeddings)")
    cache.add_argument("--model", help="clear: only the namespaces of models whose id or name contains this")
    cache.add_argument("--repair", action="store_true", help="verify: delete damaged entries")
    cache.set_defaults(func=cmd_cache)


def cmd_cache(args: argparse.Namespace) -> int:
    from ..cache_store import cache_info, clear_cache, compact_cache, verify_cache
    from ..paths import default_embedding_cache_dir

    folder = args.cache_dir or str(default_embedding_cache_dir())
    if args.action == "info":
        info = cache_info(folder)
        print_rows(["model", "revision", "dtype", "entries", "MiB", "vLLM", "namespace"],
                   [[n.name or n.model, n.revision or "?", n.dtype, f"{n.entries:,}", f"{n.bytes / 2**20:,.1f}",
                     n.vllm or "?", n.fingerprint] for n in info.namespaces])
        print(f"\n{info.folder}: {info.entries:,} entries, {info.bytes / 2**20:,.1f} MiB")
        if info.damaged_copies:
            print(f"{len(info.damaged_copies)} damaged file(s) moved aside, {info.damaged_bytes / 2**20:,.1f} MiB "
                  "(never read; `mteb-vllm cache clear` removes them)")
        return EXIT_OK
    if args.action == "verify":
        reports = verify_cache(folder, repair=args.repair)
        print_rows(["namespace", "model", "entries", "damaged", "structure"],
                   [[r.fingerprint, r.name, f"{r.entries:,}", str(r.damaged), r.structure] for r in reports])
        bad = [r for r in reports if r.damaged or r.structure != "ok"]
        if bad and not args.repair:
            print("\ndamaged entries are never returned (they are computed again); --repair deletes them now")
        return EXIT_ERROR if bad and not args.repair else EXIT_OK
    if args.action == "compact":
        print(f"freed {compact_cache(folder) / 2**20:,.1f} MiB in {folder}")
        return EXIT_OK
    removed = clear_cache(folder, model=args.model)
    print(f"removed {removed} namespace(s) from {folder}")
    return EXIT_OK
