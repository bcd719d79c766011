"""Which weights to load, which registry entry applies, and what name and revision the results carry.

Why one function: every entry point (the wrappers, the CLI's subcommands, parity, the two-stage run) must
answer these questions the same way, and the answers decide whether scores are comparable to mteb's
reference at all. The rules (issue 9 and 10):

- A registry model given by hub id loads the revision mteb's registry pins, unless the user passes one.
- A local folder is identified by the content hash of its files (:func:`~mteb_vllm.identity.
  local_revision`), never by a registry revision it may not be; passing ``revision=`` for a folder is an error.
- ``model_name=`` files local weights under a registry name (its prompts and template apply); this is
  logged, because a fine-tune evaluated under its base model's name is easy to mistake for the original.
- ``trust_remote_code=None`` follows the registry's loader for known models and is False for unknown ones;
  a checkpoint that ships its own code then fails before any engine starts, naming the flag to pass.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import check_revision
from .errors import EngineArgumentError, RemoteCodeError
from .checkpoint import check_model_exists, is_local_path, needs_remote_code
from .identity import local_revision

if TYPE_CHECKING:
    from mteb.models import ModelMeta

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference resolved before any engine starts."""

    #: What the engine loads: a local folder (expanded) or a hub id.
    path: str
    #: The name results are filed under (registry name, ``model_name``, hub id, or the folder's name).
    name: str
    #: mteb's registry entry whose prompts/template apply, or None.
    registry: ModelMeta | None
    #: Revision to load from the hub (None: the hub's default branch; always None for a local folder).
    revision: str | None
    local: bool
    trust_remote_code: bool
    #: For a local folder, the content hash its results are filed under (``local-...``); else None.
    content_revision: str | None = None


def registry_meta(name: str) -> ModelMeta | None:
    """The mteb registry entry for ``name``, or None for models mteb does not know."""
    from mteb.models.get_model_meta import get_model_meta

    try:
        return get_model_meta(name, fetch_from_hf=False)
    except (KeyError, ValueError):
        return None


def registry_trust_remote_code(meta: ModelMeta | None) -> bool:
    """What the registry's reference loader passes as ``trust_remote_code`` (False when it says nothing)."""
    kwargs: dict[str, Any] = dict(getattr(meta, "loader_kwargs", None) or {})
    for source in (kwargs, kwargs.get("model_kwargs") or {}):
        if isinstance(source, dict) and "trust_remote_code" in source:
            return bool(source["trust_remote_code"])
    return False


def resolve_model(model: str | ModelMeta, revision: str | None = None, *, model_name: str | None = None,
                  trust_remote_code: bool | None = None) -> ResolvedModel:
    """Apply the rules in the module docstring; raises before any engine starts when they are broken."""
    from mteb.models import ModelMeta

    if revision is not None:
        check_revision(revision)
    if trust_remote_code is not None and not isinstance(trust_remote_code, bool):
        raise EngineArgumentError(f"trust_remote_code must be True, False or None, got {trust_remote_code!r}")
    if isinstance(model, ModelMeta):
        if model.name is None:
            raise EngineArgumentError("the ModelMeta has no name; pass a model id or path instead")
        registry, path = model, model.name
        pinned = model.revision
    elif isinstance(model, str) and model.strip():
        path = model
        registry = registry_meta(model_name or model)
        pinned = registry.revision if registry is not None and (model_name in (None, model)) else None
    else:
        raise EngineArgumentError(f"model must be a model id, a local path or an mteb ModelMeta, got {model!r}")
    if model_name is not None and (not isinstance(model_name, str) or not model_name.strip()):
        raise EngineArgumentError(f"model_name must be a non-empty string, got {model_name!r}")

    local = is_local_path(path)
    if local:
        if revision is not None:
            raise EngineArgumentError(
                f"revision={revision!r} applies to hub models; the local folder {path!r} is identified by the "
                "content hash of its files, which the results record. Drop revision=, or pass the hub id.")
        path = os.path.abspath(check_model_exists(path))
        load_revision = None
        name = model_name or (registry.name if isinstance(model, ModelMeta) else None) or \
            os.path.basename(os.path.normpath(path))
        if model_name is not None and registry is not None:
            from .defaults import DEFAULT_MODEL_NAME, is_packaged_default

            # The packaged MiniLM under its own name is the offline default, not a mix-up worth a warning.
            expected = is_packaged_default(path) and registry.name == DEFAULT_MODEL_NAME
            log = logger.info if expected else logger.warning
            log("evaluating the local weights in %s under mteb's registry name %s: its prompts and settings "
                "apply; results are filed under the folder's content hash, not the registry revision", path,
                registry.name)
    else:
        load_revision = revision if revision is not None else (pinned if pinned not in (None, "main") else None)
        if revision is None and load_revision is not None:
            logger.info("%s: loading revision %s, the one mteb's registry pins", path, load_revision)
        name = model_name or path
    if model_name is not None and registry is None:
        logger.info("%s is not in mteb's registry; results are saved under that name", model_name)

    trust = registry_trust_remote_code(registry) if trust_remote_code is None else trust_remote_code
    if not trust and needs_remote_code(path, load_revision):
        raise RemoteCodeError(
            f"{path} ships its own modelling code (auto_map in config.json), which mteb-vllm does not run "
            "unless told to. If you trust it, pass trust_remote_code=True (CLI: --trust-remote-code).")
    return ResolvedModel(path=path, name=name, registry=registry, revision=load_revision, local=local,
                         trust_remote_code=trust, content_revision=local_revision(path) if local else None)
