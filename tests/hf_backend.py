"""A backend that runs the checkpoint with Hugging Face transformers in float32, in place of vLLM.

It computes what the engine is asked for (pooled CLS/MEAN/LAST vectors without normalisation, every token's hidden
state, a classifier's raw logits) with the same model class sentence-transformers loads. With it, the wrappers'
whole path (mteb's loader, sentence-transformers' tokenization and modules, the backend stack) is compared with
sentence-transformers bit for bit in seconds, with no engine; that vLLM's transformer equals transformers' is what
the engine tests (test_model_zoo.py) add.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mteb_vllm.backends.protocol import BackendInfo, BaseBackend, TokenizedInput


class HfBackend(BaseBackend):
    kind = "hf"

    def __init__(self, config: Any, **options: Any):
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification

        self.config = config
        self.model = config.model
        self.max_model_len = int(config.max_model_len or 512)
        self.dtype = "float32"
        pooler = config.pooler_config if isinstance(config.pooler_config, dict) else {}
        self.pooling = pooler.get("pooling_type")
        self.task = pooler.get("task")
        cls = AutoModelForSequenceClassification if config.convert == "classify" else AutoModel
        self.net = cls.from_pretrained(config.model, dtype=torch.float32).eval()
        self.calls: list[tuple[str, int]] = []

    @property
    def tokenizer(self) -> Any:
        raise AssertionError("the wrappers tokenize with sentence-transformers, not the backend's tokenizer")

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(kind=self.kind, model=self.model, revision="hf", dtype=self.dtype,
                           max_model_len=self.max_model_len)

    def _forward(self, item: TokenizedInput) -> Any:
        import torch

        ids = torch.tensor([item.token_ids])
        kwargs = {}
        if item.token_type_ids is not None:
            kwargs["token_type_ids"] = torch.tensor([item.token_type_ids])
        with torch.inference_mode():
            return self.net(input_ids=ids, **kwargs)

    def pool(self, inputs: list[TokenizedInput], task: str, *, desc: str = "") -> np.ndarray:
        self.calls.append((task, len(inputs)))
        for item in inputs:
            assert len(item) <= self.max_model_len, (len(item), self.max_model_len)
        if task == "classify":
            return np.stack([self._forward(i).logits[0].float().numpy() for i in inputs])
        hidden = [self._forward(i).last_hidden_state[0].float().numpy() for i in inputs]
        if task == "token_embed":
            assert self.task == "token_embed"
            return np.concatenate(hidden)
        assert self.task == "embed" and task == "embed"
        if self.pooling == "CLS":
            return np.stack([h[0] for h in hidden])
        if self.pooling == "LAST":
            return np.stack([h[-1] for h in hidden])
        assert self.pooling == "MEAN", self.pooling
        return np.stack([h.mean(axis=0) for h in hidden])

    def close(self) -> None:
        pass
