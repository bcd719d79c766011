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
  reported, deleted and computed again; a file SQLite cannot open, or whose pages turn out damaged when read,
  is moved aside with a warning (``mteb-vllm cache verify --repair`` recovers its readable rows).

LMDB would be faster for raw reads but needs a map size chosen up front and a C extension; ``.npy`` segments
would need our own index, locking and compaction. Neither buys anything measurable here.

A namespace is a fingerprint of everything that decides what a model computes (see
:func:`mteb_vllm.identity.fingerprint_fields`); an item's key is a hash of the exact engine input (token ids,
segment ids, pooling task), so a changed prompt, truncation or template can never return a stale value.

**What the cache may touch.** A cache folder may be any folder a user names, so the upkeep commands
(:func:`cache_info`, :func:`verify_cache`, :func:`compact_cache`, :func:`clear_cache`) only ever touch files
this module created: ``<24 hex digits>.sqlite`` files that carry its marker (a ``meta`` row naming
``mteb-vllm`` and the format version, or the manifest of an older format), their ``.json`` descriptions and
``-wal``/``-shm`` journals, and the damaged copies it moved aside. Any other file is listed as foreign and
left alone.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import MtebVllmError, UsageError

logger = logging.getLogger(__name__)

#: Bumped when the layout, the key derivation or the fingerprint changes: an old cache is then simply not found
#: (``cache info`` lists it as an older format, ``cache clear`` removes it).
FORMAT_VERSION = 3
#: The marker every file of ours carries (``meta`` row ``creator``).
CREATOR = "mteb-vllm"
_SELECT_CHUNK = 500  # keys per SELECT ... IN (...)
_SALVAGE_CHUNK = 1000  # rowids per read when recovering a damaged file
_SALVAGE_MAX_LOST = 200_000  # single rows that fail before a recovery gives up on a file

_NAMESPACE_FILE = re.compile(r"^[0-9a-f]{24}\.sqlite$")
_DAMAGED_FILE = re.compile(r"^([0-9a-f]{24})\.sqlite\.corrupt-\d{8}-\d{6}(?:-\d+)?(-wal|-shm)?$")
_JOURNALS = ("", "-wal", "-shm")


#: How long opening a new file retries SQLite's immediate "database is locked" (:meth:`Namespace._connect`).
SETUP_RETRY_SECONDS = 10.0


class CacheError(MtebVllmError, OSError):
    """The cache folder cannot be used at all (not a folder, cannot be created)."""


# --- keys ----------------------------------------------------------------------------------------------------
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


# --- one namespace ------------------------------------------------------------------------------------------------
@dataclass
class Manifest:
    """What a namespace file holds, in words (kept next to it as JSON, and inside it)."""

    fingerprint: str
    fields: dict[str, Any]
    name: str = ""
    vllm: str | None = None
    created: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps({"creator": CREATOR, "format": FORMAT_VERSION, "fingerprint": self.fingerprint,
                           "fields": self.fields, "name": self.name, "vllm": self.vllm, "created": self.created},
                          sort_keys=True, default=repr)

    @classmethod
    def from_stored(cls, data: dict[str, Any], fingerprint: str) -> Manifest:
        return cls(fingerprint, dict(data.get("fields") or {}), name=str(data.get("name") or ""),
                   vllm=data.get("vllm"), created=float(data.get("created") or time.time()))


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
        self.readable = True
        self.corrupt_rows = 0
        self._identity: tuple[int, int] | None = None
        self._conn = self._open()

    # connection ---------------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """A connection to the file, set up (WAL mode, the tables). Why retried: processes opening a new file
        at once (workers, shards) race to switch it to WAL mode and to create the tables, and SQLite answers one
        of them "database is locked" at once instead of waiting (the lock upgrade would deadlock, so the busy
        timeout does not apply): about 1 open in 100 with 4 processes here. The retry waits its turn: only
        answers that came at once, for at most :data:`SETUP_RETRY_SECONDS` (the race clears in milliseconds). A
        lock held for long, or a file system whose locks never work, still fails as before: the run goes on
        uncached with a warning."""
        deadline = time.monotonic() + SETUP_RETRY_SECONDS
        while True:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            tried = time.monotonic()
            try:
                self._set_up(conn)
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                now = time.monotonic()
                if "locked" not in str(exc) or now - tried > 1.0 or now > deadline:
                    raise
                time.sleep(0.05)

    def _set_up(self, conn: sqlite3.Connection) -> None:
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
            try:
                aside = move_aside(self.path)
                logger.warning("cache file %s is damaged (%s); moved it to %s and starting an empty one: its entries "
                               "will be computed again (mteb-vllm cache verify --repair recovers its readable "
                               "entries)", self.path, exc, aside.name)
                conn = self._connect()
            except (sqlite3.DatabaseError, OSError) as again:
                raise CacheError(f"the cache file {self.path} cannot be opened ({again})") from None
        self._identity = _file_identity(self.path)
        self._write_manifest(conn)
        return conn

    def _write_manifest(self, conn: sqlite3.Connection) -> None:
        data = self.manifest.to_json()
        try:
            if conn.execute("SELECT value FROM meta WHERE name='manifest'").fetchone() is not None:
                return
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             [("creator", CREATOR), ("format", str(FORMAT_VERSION)), ("manifest", data)])
            conn.execute("COMMIT")
            sidecar = self.path.with_suffix(".json")
            tmp = sidecar.with_suffix(f".json.{os.getpid()}.tmp")
            tmp.write_text(data)
            os.replace(tmp, sidecar)
        except (sqlite3.DatabaseError, OSError) as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.DatabaseError:
                    pass
            self._disable_writes(exc)

    def _disable_writes(self, exc: BaseException) -> None:
        if self.writable:
            logger.warning("the cache %s cannot be written (%s); going on without storing new entries (results "
                           "are not affected; free space or pass another --cache-dir to keep them)", self.path, exc)
        self.writable = False

    def _recover(self, exc: sqlite3.DatabaseError) -> bool:
        """A read or write failed. True when the file was damaged and an empty one now replaces it.

        Why confirm first: "malformed" can also come from another process replacing the file under us. SQLite's
        own structure check decides; a damaged file is moved aside (its readable entries can be recovered with
        ``mteb-vllm cache verify --repair``) so the run stops reading it, instead of failing on it and
        recomputing the same entries at every call.
        """
        if isinstance(exc, sqlite3.OperationalError):  # an I/O error, a lock, a vanished -wal: not the contents
            return False
        try:
            verdict = self._conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as check:
            verdict = str(check)
        if verdict == "ok":
            return False
        _close_quietly(self._conn)
        try:
            if _file_identity(self.path) == self._identity:  # not yet moved aside by another process
                aside = move_aside(self.path)
                logger.warning("cache file %s is damaged (%s: %s); moved it to %s and going on with an empty one: "
                               "its entries are computed again (mteb-vllm cache verify --repair recovers the "
                               "readable ones)", self.path, exc, verdict, aside.name)
            self._conn = self._connect()
            self._identity = _file_identity(self.path)
            self._write_manifest(self._conn)
            return True
        except (sqlite3.DatabaseError, OSError) as again:
            logger.warning("cache file %s is damaged (%s) and cannot be replaced (%s); going on without the cache",
                           self.path, exc, again)
            self.readable = False
            self.writable = False
            return False

    # reads and writes -------------------------------------------------------------------------------------
    def get(self, keys: list[bytes], *, fresh_only: bool = False) -> dict[bytes, np.ndarray]:
        """Entries found for ``keys``; a row whose checksum does not match is dropped and reported.

        ``fresh_only``: only entries this connection stored with ``put(..., replace=True)`` (``--overwrite``:
        nothing stored before is trusted, what was recomputed since is shared).
        """
        found: dict[bytes, np.ndarray] = {}
        bad: list[bytes] = []
        if not self.readable:
            return found
        for start in range(0, len(keys), _SELECT_CHUNK):
            chunk = keys[start:start + _SELECT_CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = (f"SELECT i.key, i.dim, i.crc, i.data FROM items i JOIN temp.fresh f ON f.key = i.key "
                   f"WHERE i.key IN ({marks})" if fresh_only else
                   f"SELECT key, dim, crc, data FROM items WHERE key IN ({marks})")
            try:
                if fresh_only:
                    self._fresh_table()
                rows = self._conn.execute(sql, chunk).fetchall()
            except sqlite3.DatabaseError as exc:
                if not self._recover(exc):
                    logger.warning("cache %s cannot be read (%s); computing these entries again", self.path, exc)
                return found  # after a recovery the file is empty: the rest are misses
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

    def _fresh_table(self) -> None:
        self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS fresh (key BLOB PRIMARY KEY)")

    def put(self, items: Iterable[tuple[bytes, np.ndarray]], *, replace: bool = False) -> int:
        """Store rows in one transaction (durable when this returns); returns how many were stored.

        ``replace``: overwrite entries stored before (``--overwrite``) and note the keys as fresh (see :meth:`get`).
        """
        if not self.writable:
            return 0
        rows = []
        for key, vector in items:
            data = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
            rows.append((key, len(data) // 4, zlib.crc32(key + data), data))
        if not rows:
            return 0
        for attempt in (1, 2):
            try:
                return self._insert(rows, replace)
            except sqlite3.DatabaseError as exc:  # disk full, read-only file, a locked database, damage
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.DatabaseError:
                    pass
                if attempt == 1 and self._recover(exc):
                    continue  # the damaged file was replaced: store these rows in the new one
                self._disable_writes(exc)
                break
        return 0

    def _follow_replacement(self) -> None:
        """Reopen when the file was removed or replaced since it was opened (``cache clear`` or ``verify
        --repair`` while this run writes): rows stored into the old, unlinked file would be lost."""
        if _file_identity(self.path) == self._identity:
            return
        try:
            conn = self._connect()
        except sqlite3.DatabaseError:  # cannot create it again: the insert below reports the real problem
            return
        logger.info("cache file %s was removed or replaced by another process; reopened it", self.path)
        _close_quietly(self._conn)
        self._conn = conn
        self._identity = _file_identity(self.path)
        self._write_manifest(conn)

    def _insert(self, rows: list[tuple[bytes, int, int, bytes]], replace: bool) -> int:
        self._follow_replacement()
        if replace:
            self._fresh_table()
        before = self._conn.total_changes
        self._conn.execute("BEGIN IMMEDIATE")
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        self._conn.executemany(f"{verb} INTO items VALUES (?, ?, ?, ?)", rows)
        changed = self._conn.total_changes - before
        if replace:
            self._conn.executemany("INSERT OR IGNORE INTO temp.fresh VALUES (?)", [(r[0],) for r in rows])
        self._conn.execute("COMMIT")
        return changed

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


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _aside_name(path: Path) -> Path:
    """Where a damaged file goes: ``<name>.corrupt-<time>[-n]``, never over an earlier damaged copy."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = path.with_name(f"{path.name}.corrupt-{stamp}"), 1
    while aside.exists():
        aside, n = path.with_name(f"{path.name}.corrupt-{stamp}-{n}"), n + 1
    return aside


def move_aside(path: Path) -> Path:
    """Rename a damaged namespace file and its journals to ``<name>.corrupt-<time>``; returns the new name."""
    aside = _aside_name(path)
    for suffix in _JOURNALS:
        src = Path(f"{path}{suffix}")
        if src.exists():
            src.rename(Path(f"{aside}{suffix}"))
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
    #: what computed the entries (the engine part of :func:`mteb_vllm.identity.fingerprint_fields`): backend,
    #: device, torch, endpoints ...
    engine: dict[str, Any] = field(default_factory=dict)
    #: the file's format; older formats are never read by this version (``clear`` removes them)
    format: int = FORMAT_VERSION

    @property
    def backend(self) -> str:
        kind = str(self.engine.get("backend") or "?")
        endpoints = self.engine.get("endpoints")
        return f"{kind} ({', '.join(endpoints)})" if endpoints else kind

    @property
    def current(self) -> bool:
        return self.format == FORMAT_VERSION


@dataclass
class CacheInfo:
    folder: Path
    namespaces: list[NamespaceInfo]
    #: damaged files moved aside (``<fingerprint>.sqlite.corrupt-*``), kept until ``verify --repair`` or ``clear``
    damaged_copies: list[Path] = field(default_factory=list)
    #: ``*.sqlite`` files in the folder this cache did not create: listed, never touched
    foreign: list[Path] = field(default_factory=list)

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
    structure: str  # "ok", SQLite's complaint, or "moved aside" for a damaged copy
    #: what ``repair`` did ("" without it)
    action: str = ""
    #: False when damage remains (found without ``repair``, or ``repair`` could not fix it)
    healthy: bool = True


@dataclass(frozen=True)
class ClearReport:
    removed: int
    damaged_removed: int = 0
    foreign: list[Path] = field(default_factory=list)


@dataclass
class _Folder:
    """The files of a cache folder, sorted by who made them."""

    namespaces: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)  # (file, stored manifest)
    damaged: list[Path] = field(default_factory=list)  # main files of damaged copies (journals go with them)
    foreign: list[Path] = field(default_factory=list)


def _scan(folder: Path) -> _Folder:
    out = _Folder()
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        if _NAMESPACE_FILE.match(path.name):
            manifest = _stored_manifest(path)
            if manifest is None:
                out.foreign.append(path)
            else:
                out.namespaces.append((path, manifest))
        elif m := _DAMAGED_FILE.match(path.name):
            # a journal goes with its main file; one whose main file is gone is listed by itself
            if not m.group(2) or not Path(str(path)[:-4]).exists():
                out.damaged.append(path)
        elif path.suffix == ".sqlite":
            out.foreign.append(path)
    return out


def _stored_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of a namespace file this cache created, else None (not ours: never touched).

    Ours means: the ``meta`` table names mteb-vllm (format 3 on), or holds a manifest for this very file name
    (format 2), or the ``.json`` description we write beside every namespace says so (a file whose header is
    damaged cannot tell by itself). ``{}`` for a file of ours whose manifest cannot be read."""
    conn = None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        rows = dict(conn.execute("SELECT name, value FROM meta WHERE name IN ('creator', 'manifest')").fetchall())
        manifest = json.loads(rows["manifest"]) if "manifest" in rows else {}
        if rows.get("creator") == CREATOR or manifest.get("fingerprint") == path.stem:
            return manifest if isinstance(manifest, dict) else {}
    except (sqlite3.Error, ValueError, TypeError):
        pass
    finally:
        _close_quietly(conn)
    sidecar = _sidecar_manifest(path.stem, path.parent)
    return {} if sidecar is not None else None


def _sidecar_manifest(stem: str, folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / f"{stem}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("fingerprint") == stem else None


def _size(path: Path) -> int:
    return sum(Path(f"{path}{s}").stat().st_size for s in _JOURNALS if Path(f"{path}{s}").exists())


def _read_manifest(conn: sqlite3.Connection) -> dict[str, Any]:
    row = conn.execute("SELECT value FROM meta WHERE name='manifest'").fetchone()
    return json.loads(row[0]) if row else {}


#: Manifest fields that describe the engine (shown by ``cache info``), as
#: :func:`mteb_vllm.identity.fingerprint_fields` stores them.
ENGINE_FIELDS = ("backend", "vllm", "torch", "device", "endpoints", "identity")


def cache_info(cache_dir: str | os.PathLike[str]) -> CacheInfo:
    """Namespaces, entries and bytes on disk per model, what computed them, and the files left alone."""
    folder = Path(cache_dir).expanduser()
    scan = _scan(folder)
    out = []
    for path, manifest in scan.namespaces:
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60.0)
            entries = int(conn.execute("SELECT count(*) FROM items").fetchone()[0])
            conn.close()
        except sqlite3.DatabaseError as exc:
            logger.warning("cache file %s cannot be read: %s (mteb-vllm cache verify checks it)", path, exc)
            entries = 0
        manifest = manifest or _sidecar_manifest(path.stem, folder) or {}
        fields = manifest.get("fields", {})
        engine = {k: fields[k] for k in ENGINE_FIELDS if fields.get(k) is not None}
        out.append(NamespaceInfo(path.stem, manifest.get("name", ""), fields.get("model", "?"),
                                 fields.get("revision"), fields.get("dtype", "?"), entries, _size(path),
                                 fields.get("vllm") or manifest.get("vllm"), path, engine,
                                 int(fields.get("format") or manifest.get("format") or 0)))
    return CacheInfo(folder, out, scan.damaged, scan.foreign)


# --- verify and repair ------------------------------------------------------------------------------------------
def _check_rows(conn: sqlite3.Connection) -> tuple[int, list[bytes]]:
    bad, total = [], 0
    for key, dim, crc, data in conn.execute("SELECT key, dim, crc, data FROM items"):
        total += 1
        if zlib.crc32(key + data) != crc or len(data) != 4 * dim:
            bad.append(key)
    return total, bad


def verify_cache(cache_dir: str | os.PathLike[str], *, repair: bool = False) -> list[VerifyReport]:
    """SQLite's structure check and every row's checksum, per namespace, and the damaged copies moved aside.

    ``repair``: damaged rows are deleted; a file whose structure is damaged is moved aside and rebuilt from its
    readable rows (each checksum verified) into a new file; the readable rows of damaged copies a run moved aside
    are put back into their namespace and the copy removed. A report whose ``healthy`` is False says why a
    repair was not possible.
    """
    folder = Path(cache_dir).expanduser()
    scan = _scan(folder)
    reports = []
    for path, manifest in scan.namespaces:
        name = manifest.get("name", "")
        try:
            conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
            try:
                structure = conn.execute("PRAGMA quick_check").fetchone()[0]
                total, bad = _check_rows(conn) if structure == "ok" else (0, [])
                if repair and bad:
                    conn.executemany("DELETE FROM items WHERE key=?", [(k,) for k in bad])
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            structure, total, bad = f"damaged: {exc}", 0, []
        if structure == "ok":
            action = f"deleted {len(bad)} damaged entries" if repair and bad else ""
            reports.append(VerifyReport(path.stem, name, total, len(bad), "ok", action, not bad or repair))
            continue
        if not structure.startswith("damaged"):
            structure = f"damaged: {structure.splitlines()[0]}"
        if not repair:
            reports.append(VerifyReport(path.stem, name, total, 0, structure, "", False))
            continue
        try:
            aside = move_aside(path)
        except OSError as exc:
            reports.append(VerifyReport(path.stem, name, total, 0, structure,
                                        f"not repaired: cannot move it aside ({exc})", False))
            continue
        reports.append(_rebuild(aside, path.stem, folder, structure, manifest))
    for copy in scan.damaged:
        stem = _DAMAGED_FILE.match(copy.name).group(1)  # type: ignore[union-attr]
        if repair:
            reports.append(_rebuild(copy, stem, folder, "moved aside (damaged)", None))
        else:
            reports.append(VerifyReport(stem, "", 0, 0, f"moved aside (damaged): {copy.name}", "", False))
    return reports


def _rebuild(copy: Path, stem: str, folder: Path, structure: str, manifest: dict[str, Any] | None) -> VerifyReport:
    """Put the readable, checksum-verified rows of a damaged copy into namespace ``stem``; remove the copy."""
    source = target = None
    recovered = lost = 0
    try:
        source = sqlite3.connect(copy, timeout=60.0, isolation_level=None)
        try:
            manifest = manifest or _read_manifest(source)
        except (sqlite3.DatabaseError, ValueError):
            pass
        manifest = manifest or _sidecar_manifest(stem, folder) or {}
        for rows, failed in _readable_rows(source):
            lost += failed
            if not rows:
                continue
            if target is None:  # created with the first readable row: nothing readable creates nothing
                target = Namespace(folder, Manifest.from_stored(manifest, stem) if manifest else
                                   Manifest(stem, {}, name="(rebuilt without its manifest)"))
            recovered += target.put((key, np.frombuffer(data, dtype=np.float32)) for key, data in rows)
            if not target.writable:
                raise OSError(f"{target.path} cannot be written")
    except (sqlite3.DatabaseError, OSError, _SalvageAborted) as exc:
        name = (manifest or {}).get("name", "")
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError) \
                and not recovered:
            # nothing in it is readable (its header is gone): the namespace is healthy without it
            _close_quietly(source)
            _remove_file(copy)
            return VerifyReport(stem, name, 0, 0, structure, f"nothing readable in {copy.name} ({exc}); removed it",
                                True)
        return VerifyReport(stem, name, recovered, 0, structure, f"not repaired: {exc}; {copy.name} kept", False)
    finally:
        _close_quietly(source)
        if target is not None:
            target.close()
    _remove_file(copy)
    lost_text = f", {lost} unreadable" if lost else ""
    return VerifyReport(stem, manifest.get("name", ""), recovered, 0, structure,
                        f"rebuilt: {recovered} entries recovered{lost_text}; {copy.name} removed", True)


class _SalvageAborted(Exception):
    pass


def _readable_rows(conn: sqlite3.Connection) -> Iterator[tuple[list[tuple[bytes, bytes]], int]]:
    """(key, data) of every row SQLite can still read and whose checksum holds, in rowid chunks; with each chunk,
    how many rows (or rowids) could not be read. A range SQLite reports damaged is halved until the damage is
    pinned to single rows, so one bad page costs the rows on it, not the file."""
    try:
        top = conn.execute("SELECT max(rowid) FROM items").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        # the right edge of the table is damaged: bound the rowids by what the file could hold
        pages, size = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        top = pages * size // 24
    lost_total = 0

    def read(lo: int, hi: int) -> tuple[list[tuple[bytes, bytes]], int]:
        nonlocal lost_total
        try:
            rows = conn.execute("SELECT key, dim, crc, data FROM items WHERE rowid BETWEEN ? AND ?",
                                (lo, hi)).fetchall()
        except sqlite3.DatabaseError:
            if lo == hi:
                lost_total += 1
                if lost_total > _SALVAGE_MAX_LOST:
                    raise _SalvageAborted(f"more than {_SALVAGE_MAX_LOST} rows unreadable") from None
                return [], 1
            mid = (lo + hi) // 2
            left, right = read(lo, mid), read(mid + 1, hi)
            return left[0] + right[0], left[1] + right[1]
        good = [(k, d) for k, dim, crc, d in rows if zlib.crc32(k + d) == crc and len(d) == 4 * dim]
        return good, len(rows) - len(good)

    for lo in range(1, top + 1, _SALVAGE_CHUNK):
        yield read(lo, min(top, lo + _SALVAGE_CHUNK - 1))


def _remove_file(path: Path) -> None:
    for suffix in _JOURNALS:
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# --- compact and clear ---------------------------------------------------------------------------------------------
def compact_cache(cache_dir: str | os.PathLike[str]) -> int:
    """Checkpoint the write-ahead logs and VACUUM every namespace; returns bytes freed. A file that cannot be
    compacted (damaged, locked, a full disk) is reported and skipped; the others are still compacted."""
    folder = Path(cache_dir).expanduser()
    paths = [p for p, _ in _scan(folder).namespaces]
    before = sum(_size(p) for p in paths)
    for path in paths:
        conn = None
        try:
            conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # VACUUM in WAL mode writes through the log
        except sqlite3.DatabaseError as exc:
            logger.warning("cache file %s was not compacted: %s (mteb-vllm cache verify checks it)", path, exc)
        finally:
            _close_quietly(conn)
    return before - sum(_size(p) for p in paths)


def model_matches(pattern: str, info: NamespaceInfo) -> bool:
    """``pattern`` names the model exactly (its name in results, e.g. ``intfloat/e5-small``, or the hub id), or
    is a shell-style pattern when it holds ``*``, ``?`` or ``[`` (``'intfloat/*'``). Never a substring match:
    ``--model e5`` must not clear ``multilingual-e5-large``."""
    names = [n for n in (info.name, info.model) if n]
    if any(ch in pattern for ch in "*?["):
        return any(fnmatch.fnmatchcase(n, pattern) for n in names)
    return pattern in names


def clear_cache(cache_dir: str | os.PathLike[str], *, model: str | None = None) -> ClearReport:
    """Delete every namespace of this cache (or those of one model, see :func:`model_matches`). Without
    ``model`` the damaged copies moved aside go too. Files the cache did not create are never touched."""
    if model is not None and not model.strip():
        raise UsageError("--model is empty: name a model exactly (as `mteb-vllm cache info` lists it) or give a "
                         "pattern such as 'intfloat/*'; leave --model out to clear the whole cache")
    folder = Path(cache_dir).expanduser()
    info = cache_info(folder)
    removed = damaged = 0
    if model is None:
        for copy in info.damaged_copies:
            _remove_file(copy)
            damaged += 1
    for ns in info.namespaces:
        if model is not None and not model_matches(model, ns):
            continue
        _remove_file(ns.path)
        sidecar = ns.path.with_suffix(".json")
        if _sidecar_manifest(ns.fingerprint, folder) is not None:
            sidecar.unlink(missing_ok=True)
        removed += 1
    return ClearReport(removed, damaged, info.foreign)
