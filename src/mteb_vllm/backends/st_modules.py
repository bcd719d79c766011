"""``StModulesBackend``: vLLM runs the transformer, sentence-transformers' own modules run the rest.

Why a layer of the backend stack (under the cache, over the engine): the numbers a sentence-transformers model
returns come from its whole module chain (Pooling, Dense, LayerNorm, Normalize ...), and vLLM reproduces only part
of it — three of six pooling modes, no prompt exclusion, no LayerNorm, Dense layers with another default
activation (measured for issue 16). So the engine is asked for what it computes exactly
and these module objects, the very ones sentence-transformers loaded from the checkpoint, do the rest:

- **native**: the first module after the Transformer is a Pooling of one mode vLLM has (cls, mean, lasttoken)
  over every token: vLLM pools (without normalising) and only the modules after the Pooling run here, on one
  vector per input;
- **tokens**: anything else: vLLM returns every token's hidden state and the whole chain runs here.

Sitting below the cache, the cache keeps final vectors; the fingerprint names the chain (:attr:`description`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np

from .protocol import Backend, BackendInfo, BackendLayer, PoolingTask, TokenizedInput

#: sentence-transformers pooling mode -> vLLM's pooling type, for the modes vLLM computes identically.
NATIVE_POOLING = {"cls": "CLS", "mean": "MEAN", "lasttoken": "LAST"}

#: Token embeddings handled at once in the token path (rows x hidden floats): about 256 MB of float32.
TOKEN_BUDGET = 64 * 1024 * 1024


def _mode(pooling: Any) -> str | None:
    mode = getattr(pooling, "pooling_mode", None)
    return mode if isinstance(mode, str) else None


def plan(modules: list[Any]) -> tuple[str | None, list[Any]]:
    """(vLLM pooling type or None for the token path, the modules to run here on the engine's output)."""
    if modules and type(modules[0]).__name__ == "Pooling":
        pooling = modules[0]
        native = NATIVE_POOLING.get(_mode(pooling) or "")
        if native is not None and getattr(pooling, "include_prompt", True):
            return native, modules[1:]
    return None, modules


def describe(modules: list[Any]) -> str:
    """The chain and its settings and weights, as one line: part of the cache fingerprint and the logs."""
    parts = []
    for module in modules:
        config = {}
        for key in getattr(module, "config_keys", []) or []:
            config[key] = getattr(module, key, None)
        state = getattr(module, "state_dict", lambda: {})()
        digest = hashlib.sha256()
        for key in sorted(state):
            digest.update(key.encode())
            digest.update(state[key].detach().float().cpu().numpy().tobytes())
        parts.append(f"{type(module).__name__}{json.dumps(config, sort_keys=True, default=repr)}"
                     + (f"#{digest.hexdigest()[:12]}" if state else ""))
    return " > ".join(parts)


class StModulesBackend(BackendLayer):
    """Runs ``modules`` (sentence-transformers module objects, in order) on what ``inner`` computes.

    ``inner`` must have been started with the pooling this plan needs (:attr:`engine_pooling`): the wrapper
    puts it in the engine config. ``classify`` calls pass through (cross-encoders have no modules here).
    """

    def __init__(self, inner: Backend, modules: list[Any]):
        super().__init__(inner)
        self.chain = describe(list(modules))
        self.engine_pooling, self.modules = plan(list(modules))
        self.description = ("vllm " + (self.engine_pooling or "ALL tokens") + (" > " if self.modules else "")
                            + describe(self.modules))
        self._hidden: int | None = None  # the engine's width, learnt from its first token batch

    # --- the Backend protocol: everything but pool and a line of info is the engine's (BackendLayer) -----------
    @property
    def info(self) -> BackendInfo:
        info = self.inner.info
        return dataclasses.replace(info, details={**info.details, "pipeline": self.description})

    def pool(self, inputs: list[TokenizedInput], task: PoolingTask, *, desc: str = "") -> np.ndarray:
        if task != "embed":
            return self.inner.pool(inputs, task, desc=desc)
        if not inputs:
            return np.zeros((0, 0), dtype=np.float32)
        if self.engine_pooling is not None:
            pooled = self.inner.pool(inputs, "embed", desc=desc)
            return self._run({"sentence_embedding": pooled})
        return self._token_path(inputs, desc)

    # --- the modules --------------------------------------------------------------------------------------
    def _run(self, features: dict[str, Any]) -> np.ndarray:
        import torch

        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
                   for k, v in features.items()}
        with torch.inference_mode():
            for module in self.modules:
                tensors = module(tensors)
        return tensors["sentence_embedding"].float().numpy()

    def _token_path(self, inputs: list[TokenizedInput], desc: str) -> np.ndarray:
        """Rows grouped by prompt length (a Pooling that leaves the prompt out reads one length per batch, as in
        sentence-transformers) and cut to bounded token-embedding batches."""
        out: list[np.ndarray | None] = [None] * len(inputs)
        groups: dict[int | None, list[int]] = {}
        for i, item in enumerate(inputs):
            groups.setdefault(item.prompt_length, []).append(i)
        for prompt_length, members in groups.items():
            start = 0
            while start < len(members):
                batch, tokens = [], 0
                while start < len(members) and (not batch or tokens + len(inputs[members[start]]) <= self._row_budget):
                    batch.append(members[start])
                    tokens += len(inputs[members[start]])
                    start += 1
                vectors = self._token_batch([inputs[i] for i in batch], prompt_length, desc)
                for i, vector in zip(batch, vectors):
                    out[i] = vector
        return np.stack(out)  # type: ignore[arg-type]

    @property
    def _row_budget(self) -> int:
        hidden = self._hidden or 1024
        return max(1, TOKEN_BUDGET // hidden)

    def _token_batch(self, items: list[TokenizedInput], prompt_length: int | None, desc: str) -> np.ndarray:
        import torch

        flat = self.inner.pool(items, "token_embed", desc=desc)
        self._hidden = int(flat.shape[1])
        lengths = [len(item) for item in items]
        width = max(lengths)
        embeddings = torch.zeros(len(items), width, flat.shape[1], dtype=torch.float32)
        mask = torch.zeros(len(items), width, dtype=torch.int64)
        ids = torch.zeros(len(items), width, dtype=torch.int64)
        offset = 0
        for row, (item, n) in enumerate(zip(items, lengths)):
            embeddings[row, :n] = torch.from_numpy(flat[offset:offset + n])
            mask[row, :n] = 1
            ids[row, :n] = torch.tensor(item.token_ids, dtype=torch.int64)
            offset += n
        features: dict[str, Any] = {"token_embeddings": embeddings, "attention_mask": mask, "input_ids": ids}
        if prompt_length is not None:
            features["prompt_length"] = prompt_length
        return self._run(features)
