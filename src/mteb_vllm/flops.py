"""How close a run gets to the hardware: model FLOPs per input and the device's measured matmul peak.

Why measure the peak instead of quoting a datasheet: on a shared or virtualised CPU the datasheet number is
fiction, and the question users ask is "how much of what this box can do did the engine use". A large
square matmul through torch is the ceiling every transformer forward pass is made of.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TransformerShape:
    """The numbers that decide a transformer encoder/decoder's forward FLOPs."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    gated_mlp: bool = False

    @classmethod
    def from_config(cls, config: Any) -> TransformerShape:
        cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = int(cfg.num_attention_heads)
        hidden = int(cfg.hidden_size)
        model_type = getattr(cfg, "model_type", "")
        return cls(
            layers=int(cfg.num_hidden_layers),
            hidden=hidden,
            intermediate=int(getattr(cfg, "intermediate_size", 4 * hidden)),
            heads=heads,
            kv_heads=int(getattr(cfg, "num_key_value_heads", None) or heads),
            head_dim=int(getattr(cfg, "head_dim", None) or hidden // heads),
            # LLaMA-style blocks (Qwen, Mistral, Gemma) have gate, up and down projections
            gated_mlp=model_type not in ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra"),
        )

    @property
    def params_per_token(self) -> int:
        """Weights every token multiplies through (embeddings excluded: they are a lookup)."""
        attn = self.hidden * self.heads * self.head_dim * 2 + self.hidden * self.kv_heads * self.head_dim * 2
        mlp = self.hidden * self.intermediate * (3 if self.gated_mlp else 2)
        return self.layers * (attn + mlp)

    def forward_flops(self, seq_len: int) -> int:
        """FLOPs of one sequence: 2 per weight per token, plus QK^T and AV (2 * 2 * s^2 * d per layer)."""
        dense = 2 * self.params_per_token * seq_len
        attention = 4 * self.layers * self.heads * self.head_dim * seq_len * seq_len
        return dense + attention


def model_shape(model: str, trust_remote_code: bool = True) -> TransformerShape | None:
    from .hardware import hf_text_config

    config = hf_text_config(model, trust_remote_code)
    try:
        return TransformerShape.from_config(config) if config is not None else None
    except (AttributeError, TypeError, ValueError):  # not a transformer shape this module knows
        return None


def matmul_peak_gflops(dtype: str = "float32", size: int = 2048, seconds: float = 2.0) -> float:
    """Best sustained GFLOP/s of an ``size``-square matmul in ``dtype`` on the CPU, with all of torch's threads."""
    import torch

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    a = torch.randn(size, size).to(torch_dtype)
    b = torch.randn(size, size).to(torch_dtype)
    torch.matmul(a, b)  # warm-up: first call allocates and picks kernels
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        torch.matmul(a, b)
        took = time.perf_counter() - started
        best = max(best, 2 * size**3 / took / 1e9)
    return best
