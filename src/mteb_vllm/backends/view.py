"""A view of a sentence-transformers checkpoint that vLLM reads as a plain Hugging Face model.

Why: vLLM reads sentence-transformers files on its own (``modules.json``, the pooling and Dense configs,
``sentence_bert_config.json``) and applies part of them with its own semantics: Dense layers without a saved
activation get none (sentence-transformers: Tanh), an unsupported activation drops every Dense layer, a saved
``max_seq_length`` replaces the context length, Normalize turns into normalisation of every token. When the
wrapper runs those modules itself (:mod:`mteb_vllm.backends.st_modules`), vLLM must see only the transformer: a
folder of symbolic links to the checkpoint's files, without the sentence-transformers ones.

Views live in the user cache folder, one per checkpoint folder, and are rebuilt when they do not match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

#: sentence-transformers files at the top of a checkpoint (module folders are found through modules.json).
ST_FILES = frozenset({"modules.json", "config_sentence_transformers.json", "sentence_bert_config.json",
                      "sentence_roberta_config.json", "sentence_distilbert_config.json",
                      "sentence_camembert_config.json", "sentence_albert_config.json",
                      "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json"})

#: What vLLM loads from a hub repository (weights, configs, tokenizer, custom code), when the repository is
#: fetched for a view.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "*.tiktoken", "*.bin", "*.pt"]


#: The hidden file (left out of content hashes) that names the checkpoint a view shows.
SOURCE_FILE = ".mteb-vllm-view-of.json"


def view_source(path: str) -> tuple[str, str | None] | None:
    """(model, revision) of the checkpoint an engine view shows, or None when ``path`` is not a view: the server's
    identity names the checkpoint's revision, not the view's."""
    try:
        data = json.loads((Path(os.path.expanduser(path)) / SOURCE_FILE).read_text())
    except (OSError, ValueError, TypeError):
        return None
    return (str(data["model"]), data.get("revision")) if isinstance(data, dict) and data.get("model") else None


def _local_folder(model: str, revision: str | None) -> Path:
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, revision=revision, allow_patterns=_HUB_PATTERNS, local_files_only=True))
    except Exception:  # not (completely) in the cache: fetched, unless HF_HUB_OFFLINE forbids it (then it raises)
        return Path(snapshot_download(model, revision=revision, allow_patterns=_HUB_PATTERNS))


def _hidden(folder: Path) -> set[str]:
    """The top-level names vLLM must not see: sentence-transformers' files and module folders."""
    hidden = {name for name in ST_FILES if (folder / name).exists()}
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        modules = []
    for entry in modules if isinstance(modules, list) else []:
        sub = str(entry.get("path") or "").strip("/")
        if sub and "/" not in sub and sub not in (".", ".."):
            hidden.add(sub)
    return hidden


def engine_view(model: str, revision: str | None = None) -> str:
    """A folder with the checkpoint's files except the sentence-transformers ones (see the module docstring), or
    ``model`` itself when it has none of them."""
    folder = _local_folder(model, revision).resolve()
    hidden = _hidden(folder)
    if not hidden:
        return model
    from ..paths import user_cache_dir

    view = user_cache_dir() / "engine-views" / hashlib.sha256(f"{folder}|{model}|{revision}".encode()).hexdigest()[:20]
    wanted = {entry.name: entry for entry in folder.iterdir() if entry.name not in hidden}
    current = {entry.name for entry in view.iterdir()} - {SOURCE_FILE} if view.is_dir() else None
    if current != set(wanted) or any(os.readlink(view / name) != str(target) for name, target in wanted.items()
                                      if (view / name).is_symlink()):
        tmp = view.with_name(f"{view.name}.{os.getpid()}.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for name, target in wanted.items():
            link = tmp / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
        (tmp / SOURCE_FILE).write_text(json.dumps({"model": model, "revision": revision}))
        if view.exists():
            for entry in view.iterdir():
                entry.unlink()
            view.rmdir()
        os.replace(tmp, view)
        logger.debug("engine view of %s without %s: %s", folder, sorted(hidden), view)
    return str(view)
