"""Checks that run before any engine starts, so a run that cannot finish fails in seconds, in one line.

Why: starting vLLM takes seconds to minutes, and the failures users hit most (an output folder that cannot be
written, a dataset that cannot be downloaded, a model id with a typo, a reranker without a score head, more
tensor-parallel ranks than cores) used to surface only after that start, as long tracebacks, or after the
first task's work was done and then lost. Each check raises :class:`PreflightError` with what to do.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

from .errors import PreflightError

logger = logging.getLogger(__name__)

__all__ = ["PreflightError", "check_engine_fit", "check_model_files", "check_task_data", "check_writable_folder"]


def check_writable_folder(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove a file can be written in it (the probe is removed again)."""
    from .errors import UsageError

    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"the {what} {str(folder)!r} is an existing file, not a folder; pass another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".mteb-vllm-write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PreflightError(f"the {what} {str(folder)!r} cannot be written ({exc.strerror or exc}); "
                             "pass a folder you can write to") from None
    return folder


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or \
        os.environ.get("HF_DATASETS_OFFLINE", "0").lower() in ("1", "true", "yes")


def _has_custom_loader(task: Any) -> bool:
    """Tasks whose ``load_data`` is written outside mteb (this package's demo tasks, a user's own or generated
    tasks) build their data themselves; mteb's own loaders read ``metadata.dataset`` from the hub."""
    owner = next((cls for cls in type(task).__mro__ if "load_data" in vars(cls)), None)
    return owner is not None and not owner.__module__.startswith("mteb.")


def _dataset_cached(path: str, revision: str | None) -> bool:
    """Whether the hub dataset is in the Hugging Face hub cache or the datasets library's cache."""
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(path, repo_type="dataset", revision=revision, local_files_only=True)
        return True
    except Exception:
        pass
    try:
        from datasets import config as ds_config

        cache = Path(ds_config.HF_DATASETS_CACHE)
        flat = path.replace("/", "___")
        return any(cache.glob(f"{flat}*")) or any(cache.glob(f"{path.split('/')[-1]}*"))
    except Exception:
        return False


def _subtasks(task: Any) -> list[Any]:
    inner = getattr(task.metadata, "tasks", None)
    return list(inner) if inner else [task]


def check_task_data(tasks: list[Any]) -> None:
    """Every task's dataset can be loaded: cached locally, or (online) reachable on the hub.

    Tasks whose data the task object builds itself pass. One error lists every task that cannot load, why,
    and the three ways out.
    """
    problems: list[str] = []
    offline = _offline()
    for task in (sub for t in tasks for sub in _subtasks(t)):
        if _has_custom_loader(task) or getattr(task, "data_loaded", False):
            continue
        dataset = task.metadata.dataset or {}
        path, revision = dataset.get("path"), dataset.get("revision")
        if not path or os.path.isdir(str(path)) or _dataset_cached(path, revision):
            continue
        if offline:
            problems.append(f"{task.metadata.name}: dataset {path}@{revision} is not in the local cache "
                            "and HF_HUB_OFFLINE is set")
            continue
        try:
            from huggingface_hub import HfApi

            HfApi().dataset_info(path, revision=revision, timeout=15)
        except Exception as exc:
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            problems.append(f"{task.metadata.name}: dataset {path}@{revision} is not cached and the hub "
                            f"cannot be reached ({reason})")
    if problems:
        raise PreflightError(
            "task data unavailable: " + "; ".join(problems) + ". Connect to the network, or download the "
            "data where you have one (python -c \"import mteb; mteb.get_task('NAME').load_data()\") and run "
            "with HF_HUB_OFFLINE=1, or point HF_HOME at a copy of a Hugging Face cache that has it.")


def check_model_files(model: str, revision: str | None = None) -> None:
    """The model's config can be read: a folder with config.json, or a hub id that is cached or reachable."""
    from .errors import UsageError
    from .checkpoint import check_model_exists, config_json, is_local_path

    if is_local_path(model):
        check_model_exists(model)  # ModelNotFoundError when the folder is not there
    if config_json(model, revision) is not None:
        return
    if is_local_path(model):
        raise UsageError(f"{model!r} has no readable config.json; pass the folder of a Hugging Face "
                         "checkpoint (the one with config.json and the weights)")
    where = "in the local cache (HF_HUB_OFFLINE is set)" if _offline() else "in the local cache or on the hub"
    raise PreflightError(f"model {model!r} was not found {where}; check the id, your network, or pass a local "
                         "folder")


def check_engine_fit(tensor_parallel_size: int, endpoints: list[str] | None = None) -> None:
    """Engine arguments that cannot work on this machine, refused before an engine is started: more
    tensor-parallel ranks than CPU cores, or than visible GPUs (counted through NVML, without initialising
    CUDA in this process: :mod:`mteb_vllm.gpu`)."""
    if endpoints:
        return
    from .errors import EngineArgumentError
    from .gpu import cuda_build, visible_gpus
    from .cpu_defaults import core_groups

    gpus = visible_gpus().devices if cuda_build() else []
    if gpus:
        if tensor_parallel_size > len(gpus):
            raise EngineArgumentError(
                f"tensor_parallel_size={tensor_parallel_size} needs {tensor_parallel_size} GPUs, but only "
                f"{len(gpus)} visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        return
    from .precision import engine_runs_on_cpu

    if tensor_parallel_size > 1 and engine_runs_on_cpu():
        core_groups(tensor_parallel_size)  # EngineArgumentError (a usage error) when the cores do not suffice
