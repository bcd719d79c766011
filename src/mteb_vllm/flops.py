"""How close a run gets to the hardware: the device's measured matmul peak (model FLOPs per input are
:meth:`mteb_vllm.checkpoint.TransformerShape.forward_flops`).

Why measure the peak instead of quoting a datasheet: on a shared or virtualised CPU the datasheet number is
fiction, and the question users ask is "how much of what this box can do did the engine use". A large
square matmul through torch is the ceiling every transformer forward pass is made of.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def best_gflops(op: Callable[[], object], flops: float, seconds: float) -> float:
    """Best GFLOP/s of ``op`` (``flops`` per call) over repeated calls for ``seconds``, after one warm-up call
    (the first allocates and picks kernels)."""
    op()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        op()
        best = max(best, flops / (time.perf_counter() - started) / 1e9)
    return best


def matmul_peak_gflops(dtype: str = "float32", size: int = 2048, seconds: float = 2.0) -> float:
    """Best sustained GFLOP/s of an ``size``-square matmul in ``dtype`` on the CPU, with all of torch's threads."""
    import torch

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    gen = torch.Generator().manual_seed(0)  # a private generator: the caller's RNG state stays as it was
    a = torch.randn(size, size, generator=gen).to(torch_dtype)
    b = torch.randn(size, size, generator=gen).to(torch_dtype)
    return best_gflops(lambda: torch.matmul(a, b), 2 * size**3, seconds)
