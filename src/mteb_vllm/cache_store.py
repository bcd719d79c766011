"""The on-disk store of the embedding/score cache: one SQLite file per model fingerprint.

Why SQLite (the standard library's, no extra dependency), after weighing plain ``.npy`` segments with a key
file and LMDB:

- **Crash safety for free.** Every flush is one transaction; with write-ahead logging a committed transaction
  survives ``kill -9`` (``synchronous=NORMAL``: a power cut may lose the last commits, never the file's
  integrity), and an interrupted one leaves nothing half written. That is exactly "a crash loses at most the last unflushed piece", with no temp-file/rename/fsync
  protocol of our own to get wrong (mteb's own cache rewrote a JSON index in place and lost vectors).
- **Several writers.** Workers and shards of one run share a cache folder; SQLite serializes writers with file
  locks (``busy_timeout``), readers never block in WAL mode, and ``INSERT OR IGNORE`` makes a race between two
  processes computing the same input harmless (they store the same value).
- **Lookups by key** over millions of rows need an index; a primary key is one, and a fully cached run reads
  30k vectors in a fraction of a second.
- **Corruption is detected, never returned.** SQLite checks its own structure (``quick_check``); bit flips
  inside a value are caught by a CRC32 stored with each row and verified on every read. A bad row is
  reported, deleted and computed again; a file SQLite cannot open is moved aside with a warning.

LMDB would be faster for raw reads but needs a map size chosen up front and a C extension; ``.npy`` segments
would need our own index, locking and compaction. Neither buys anything measurable here.

A namespace is a fingerprint of everything that decides what a model computes (see
:func:`fingerprint_fields`); an item's key is a hash of the exact engine input (token ids, segment ids, pooling
task), so a changed prompt, truncation or template can never return a stale value.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import MtebVllmError

logger = logging.getLogger(__name__)

#: Bumped when the layout or the key derivation changes: an old cache is then simply not found.
FORMAT_VERSION = 2
_SELECT_CHUNK = 500  # keys per SELECT ... IN (...)


class CacheError(MtebVllmError, OSError):
    """The cache folder cannot be used at all (not a folder, cannot be created)."""


# --- keys and fingerprints ------------------------------------------------------------------------------------
def item_key(task: str, token_ids: list[int], token_type_ids: list[int] | None,
             prompt_length: int | None = None) -> bytes:
    """16 bytes identifying one engine input: the pooling task, the token ids, the segment ids and, for a pooling
    that leaves the prompt out, the prompt's length."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(task.encode())
    digest.update(b"\0")
    digest.update(np.asarray(token_ids, dtype=np.int64).tobytes())
    if token_type_ids is not None and any(token_type_ids):
        digest.update(b"\1")
        digest.update(np.asarray(token_type_ids, dtype=np.int8).tobytes())
    if prompt_length is not None:
        digest.update(b"\2" + str(prompt_length).encode())
    return digest.digest()


#: Pass-through engine arguments that decide how work is scheduled, stored or logged, never the numbers: they
#: stay out of the fingerprint so that tuning them keeps the cache. Every other pass-through argument
#: (``kv_cache_dtype``, ``load_format``, ``model_impl``, ``code_revision``, ``tokenizer``, ...) is part of it,
#: including ones this list has never heard of: an unknown argument costs a recomputation, never a wrong vector.
NEUTRAL_ENGINE_ARGS = frozenset({
    "block_size", "swap_space", "cpu_offload_gb", "kv_cache_memory_bytes", "num_gpu_blocks_override",
    "disable_log_stats", "enable_log_requests", "download_dir", "seed", "max_num_partial_prefills",
    "max_long_partial_prefills", "long_prefill_token_threshold", "enable_chunked_prefill", "scheduling_policy",
    "pipeline_parallel_size", "data_parallel_size", "distributed_executor_backend", "worker_extension_cls",
})


def fingerprint_fields(info: Any, config: Any) -> dict[str, Any]:
    """Everything that decides the numbers a model returns for given token ids.

    From the backend: the model (hub id; a local folder by its content hash alone, so moving the folder keeps
    its cache), the revision actually loaded (a commit or ``local-<hash>``; never a moving branch), the resolved
    precision and the context length. From the engine config: quantization, pooling and normalization, the
    runner conversion, the classifier head overrides and score template, the head's dtype, and every other
    pass-through engine argument but the scheduling ones (:data:`NEUTRAL_ENGINE_ARGS`). The backend kind is
    left out on purpose: a fleet and the local engine compute the same values and share entries.
    """
    revision = getattr(info, "revision", None)
    local = str(revision or "").startswith("local-")
    template = getattr(config, "score_template", None)
    engine_kwargs = dict(getattr(config, "engine_kwargs", None) or {})
    others = {k: v for k, v in engine_kwargs.items() if k not in NEUTRAL_ENGINE_ARGS and k != "quantization"}
    # added only when present, so a cache filled without pass-through arguments keeps its fingerprint
    extra = {"engine_args": json.dumps(others, sort_keys=True, default=repr)} if others else {}
    return {**extra,
        "format": FORMAT_VERSION,
        "model": "local" if local else str(getattr(info, "model", "")),
        "revision": revision,
        "dtype": str(getattr(info, "dtype", "")),
        "max_model_len": int(getattr(info, "max_model_len", 0) or 0),
        "truncation": "right",
        "quantization": engine_kwargs.get("quantization"),
        "pooler_config": repr(getattr(config, "pooler_config", None)),
        "convert": getattr(config, "convert", None),
        "hf_overrides": json.dumps(getattr(config, "hf_overrides", None) or {}, sort_keys=True, default=repr),
        "head_dtype": getattr(config, "head_dtype", None),
        "score_template": repr(template) if template is not None else None,
        **({"output_modules": config.output_modules} if getattr(config, "output_modules", None) else {}),
    }


def fingerprint(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=repr).encode()).hexdigest()[:24]


# --- one namespace ------------------------------------------------------------------------------------------------
@dataclass
class Manifest:
    """What a namespace file holds, in words (kept next to it as JSON, and inside it)."""

    fingerprint: str
    fields: dict[str, Any]
    name: str = ""
    vllm: str | None = None
    created: float = field(default_factory=time.time)


class Namespace:
    """One model fingerprint's entries in ``{cache_dir}/{fingerprint}.sqlite``.

    Use from one thread at a time (the backends serialize calls); each process opens its own connection.
    """

    def __init__(self, cache_dir: str | os.PathLike[str], manifest: Manifest, *, max_bytes: int | None = None):
        self.folder = Path(cache_dir).expanduser()
        self.manifest = manifest
        self.path = self.folder / f"{manifest.fingerprint}.sqlite"
        self.max_bytes = max_bytes
        self.writable = True
        self.corrupt_rows = 0
        self._conn = self._open()

    # connection ---------------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives the process being killed (it is in the log, in the OS's page
        # cache); only a power cut can lose the last commits, and never corrupts the file. FULL fsyncs every
        # commit, which cost 6 % of a cold STS run here.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=60000")
        if self.max_bytes is not None:  # a size cap (tests use it to make "disk full" happen on purpose)
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={max(2, self.max_bytes // page)}")
        # A rowid table with a unique index on the key, not WITHOUT ROWID: rows of 1.5 KB and more would make a
        # clustered key index deep and slow (SQLite recommends WITHOUT ROWID for small rows only).
        conn.execute("CREATE TABLE IF NOT EXISTS items (key BLOB NOT NULL UNIQUE, dim INTEGER NOT NULL, "
                      "crc INTEGER NOT NULL, data BLOB NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"the cache folder {str(self.folder)!r} cannot be created ({exc.strerror or exc})") \
                from None
        conn = None
        try:
            conn = self._connect()
            conn.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.DatabaseError as exc:
            _close_quietly(conn)
            # Damage is SQLite's "not a database" / "malformed" (DatabaseError itself); a full disk, an I/O error,
            # a read-only file or a lock held too long (OperationalError) says nothing about the file's contents,
            # and moving a healthy cache aside for it would throw its entries away.
            if isinstance(exc, sqlite3.OperationalError):
                raise CacheError(f"the cache file {self.path} cannot be opened ({exc})") from None
            aside = _aside_name(self.path)
            logger.warning("cache file %s is damaged (%s); moved it to %s and starting an empty one: its entries "
                           "will be computed again (mteb-vllm cache clear removes the damaged copy)",
                           self.path, exc, aside.name)
            try:
                for suffix in ("", "-wal", "-shm"):
                    src = Path(f"{self.path}{suffix}")
                    if src.exists():
                        src.rename(Path(f"{aside}{suffix}"))
                conn = self._connect()
            except (sqlite3.DatabaseError, OSError) as again:
                raise CacheError(f"the cache file {self.path} cannot be opened ({again})") from None
        self._write_manifest(conn)
        return conn

    def _write_manifest(self, conn: sqlite3.Connection) -> None:
        data = json.dumps({"fingerprint": self.manifest.fingerprint, "fields": self.manifest.fields,
                           "name": self.manifest.name, "vllm": self.manifest.vllm,
                           "created": self.manifest.created}, sort_keys=True)
        try:
            stored = conn.execute("SELECT value FROM meta WHERE name='manifest'").fetchone()
            if stored is not None:
                old = json.loads(stored[0])
                if self.manifest.vllm and old.get("vllm") and old["vllm"] != self.manifest.vllm:
                    logger.warning("cache %s was filled with vLLM %s; this run uses vLLM %s. Entries are reused "
                                   "(same model, revision and settings); clear the cache (mteb-vllm cache clear) "
                                   "if the new version changes results", self.path.name, old["vllm"],
                                   self.manifest.vllm)
                return
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('manifest', ?)", (data,))
            sidecar = self.path.with_suffix(".json")
            tmp = sidecar.with_suffix(f".json.{os.getpid()}.tmp")
            tmp.write_text(data)
            os.replace(tmp, sidecar)
        except (sqlite3.DatabaseError, OSError) as exc:
            self._disable_writes(exc)

    def _disable_writes(self, exc: BaseException) -> None:
        if self.writable:
            logger.warning("the cache %s cannot be written (%s); going on without storing new entries (results "
                           "are not affected; free space or pass another --cache-dir to keep them)", self.path, exc)
        self.writable = False

    # reads and writes -------------------------------------------------------------------------------------
    def get(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        """Entries found for ``keys``; a row whose checksum does not match is dropped and reported."""
        found: dict[bytes, np.ndarray] = {}
        bad: list[bytes] = []
        for start in range(0, len(keys), _SELECT_CHUNK):
            chunk = keys[start:start + _SELECT_CHUNK]
            marks = ",".join("?" * len(chunk))
            try:
                rows = self._conn.execute(f"SELECT key, dim, crc, data FROM items WHERE key IN ({marks})",
                                          chunk).fetchall()
            except sqlite3.DatabaseError as exc:
                logger.warning("cache %s cannot be read (%s); computing these entries again", self.path, exc)
                return found
            for key, dim, crc, data in rows:
                if zlib.crc32(key + data) != crc or len(data) != 4 * dim:
                    bad.append(key)
                    continue
                found[key] = np.frombuffer(data, dtype=np.float32)
        if bad:
            self.corrupt_rows += len(bad)
            logger.warning("cache %s: %d damaged entr%s (checksum mismatch) ignored and computed again",
                           self.path.name, len(bad), "y" if len(bad) == 1 else "ies")
            if self.writable:
                try:
                    self._conn.executemany("DELETE FROM items WHERE key=?", [(k,) for k in bad])
                except sqlite3.DatabaseError:
                    pass
        return found

    def put(self, items: Iterable[tuple[bytes, np.ndarray]]) -> int:
        """Store rows in one transaction (durable when this returns); returns how many were new."""
        if not self.writable:
            return 0
        rows = []
        for key, vector in items:
            data = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
            rows.append((key, len(data) // 4, zlib.crc32(key + data), data))
        if not rows:
            return 0
        try:
            before = self._conn.total_changes
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany("INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?)", rows)
            self._conn.execute("COMMIT")
            return self._conn.total_changes - before
        except sqlite3.DatabaseError as exc:  # disk full, read-only file, a locked database past the timeout
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.DatabaseError:
                pass
            self._disable_writes(exc)
            return 0

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM items").fetchone()[0])

    def close(self) -> None:
        _close_quietly(self._conn)


def _close_quietly(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except sqlite3.Error:
            pass


def _aside_name(path: Path) -> Path:
    """Where a damaged file goes: ``<name>.corrupt-<time>[-n]``, never over an earlier damaged copy."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = path.with_name(f"{path.name}.corrupt-{stamp}"), 1
    while aside.exists():
        aside, n = path.with_name(f"{path.name}.corrupt-{stamp}-{n}"), n + 1
    return aside


# --- the whole folder (the `mteb-vllm cache` commands) -----------------------------------------------------------
@dataclass(frozen=True)
class NamespaceInfo:
    fingerprint: str
    name: str
    model: str
    revision: str | None
    dtype: str
    entries: int
    bytes: int
    vllm: str | None
    path: Path


@dataclass
class CacheInfo:
    folder: Path
    namespaces: list[NamespaceInfo]
    #: damaged files moved aside (``*.sqlite.corrupt-*``), kept for inspection until ``clear``
    damaged_copies: list[Path] = field(default_factory=list)

    @property
    def damaged_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.damaged_copies if p.exists())

    @property
    def entries(self) -> int:
        return sum(n.entries for n in self.namespaces)

    @property
    def bytes(self) -> int:
        return sum(n.bytes for n in self.namespaces)


@dataclass(frozen=True)
class VerifyReport:
    fingerprint: str
    name: str
    entries: int
    damaged: int
    structure: str  # "ok" or SQLite's complaint


def _files(folder: Path, pattern: str = "*.sqlite") -> list[Path]:
    """The namespace files (or, with ``pattern=DAMAGED``, the damaged copies moved aside)."""
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


DAMAGED = "*.sqlite.corrupt-*"


def _size(path: Path) -> int:
    return sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal", "-shm") if Path(f"{path}{s}").exists())


def _read_manifest(conn: sqlite3.Connection) -> dict[str, Any]:
    row = conn.execute("SELECT value FROM meta WHERE name='manifest'").fetchone()
    return json.loads(row[0]) if row else {}


def cache_info(cache_dir: str | os.PathLike[str]) -> CacheInfo:
    """Namespaces, entries and bytes on disk per model."""
    folder = Path(cache_dir).expanduser()
    out = []
    for path in _files(folder):
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60.0)
            manifest = _read_manifest(conn)
            entries = int(conn.execute("SELECT count(*) FROM items").fetchone()[0])
            conn.close()
        except sqlite3.DatabaseError as exc:
            logger.warning("cache file %s cannot be read: %s", path, exc)
            manifest, entries = {}, 0
        fields = manifest.get("fields", {})
        out.append(NamespaceInfo(path.stem, manifest.get("name", ""), fields.get("model", "?"),
                                 fields.get("revision"), fields.get("dtype", "?"), entries, _size(path),
                                 manifest.get("vllm"), path))
    return CacheInfo(folder, out, _files(folder, DAMAGED))


def verify_cache(cache_dir: str | os.PathLike[str], *, repair: bool = False) -> list[VerifyReport]:
    """SQLite's structure check and every row's checksum; ``repair`` deletes the damaged rows."""
    reports = []
    for path in _files(Path(cache_dir).expanduser()):
        try:
            conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
            structure = conn.execute("PRAGMA quick_check").fetchone()[0]
            manifest = _read_manifest(conn)
            bad, total = [], 0
            for key, dim, crc, data in conn.execute("SELECT key, dim, crc, data FROM items"):
                total += 1
                if zlib.crc32(key + data) != crc or len(data) != 4 * dim:
                    bad.append(key)
            if repair and bad:
                conn.executemany("DELETE FROM items WHERE key=?", [(k,) for k in bad])
            conn.close()
        except sqlite3.DatabaseError as exc:
            reports.append(VerifyReport(path.stem, "", 0, 0, f"unreadable: {exc}"))
            continue
        reports.append(VerifyReport(path.stem, manifest.get("name", ""), total, len(bad), structure))
    return reports


def compact_cache(cache_dir: str | os.PathLike[str]) -> int:
    """Checkpoint the write-ahead logs and VACUUM every namespace; returns bytes freed. A file that cannot be
    compacted (damaged, locked, a full disk) is reported and skipped; the others are still compacted."""
    folder = Path(cache_dir).expanduser()
    before = sum(_size(p) for p in _files(folder))
    for path in _files(folder):
        conn = None
        try:
            conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # VACUUM in WAL mode writes through the log
        except sqlite3.DatabaseError as exc:
            logger.warning("cache file %s was not compacted: %s (mteb-vllm cache verify checks it)", path, exc)
        finally:
            _close_quietly(conn)
    return before - sum(_size(p) for p in _files(folder))


def clear_cache(cache_dir: str | os.PathLike[str], *, model: str | None = None) -> int:
    """Delete every namespace (or those whose model or name contains ``model``); returns how many. Without
    ``model`` the damaged copies moved aside go too."""
    removed = 0
    if model is None:
        for copy in _files(Path(cache_dir).expanduser(), DAMAGED):
            copy.unlink(missing_ok=True)
    for info in cache_info(cache_dir).namespaces:
        if model is not None and model not in info.model and model not in info.name:
            continue
        for suffix in ("", "-wal", "-shm"):
            Path(f"{info.path}{suffix}").unlink(missing_ok=True)
        info.path.with_suffix(".json").unlink(missing_ok=True)
        removed += 1
    return removed
