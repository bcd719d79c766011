"""CPU defaults: what is derived from the machine and the model, and that the user's choice always wins."""

from __future__ import annotations

import gc
import platform

import pytest

from mteb_vllm import cpu_defaults


def test_core_ranges_use_the_bind_syntax():
    assert cpu_defaults._as_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert cpu_defaults._as_ranges([3]) == "3"


def test_worker_thread_binding_respects_the_user(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    cores = cpu_defaults.available_cores()
    assert cpu_defaults.engine_thread_environment() == {"VLLM_CPU_OMP_THREADS_BIND": cpu_defaults._as_ranges(cores)}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's thread count limits the binding
    assert cpu_defaults.engine_thread_environment() == {"VLLM_CPU_OMP_THREADS_BIND": str(cores[0])}
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")  # the user's binding is taken as it is
    assert cpu_defaults.engine_thread_environment() == {}


def test_tensor_parallel_ranks_get_disjoint_core_groups():
    assert cpu_defaults.core_groups(2, [0, 1, 2, 3]) == [[0, 1], [2, 3]]
    assert cpu_defaults.core_groups(1, [5, 7]) == [[5, 7]]
    with pytest.raises(ValueError, match="tensor_parallel_size=3 needs at least one CPU core per rank"):
        cpu_defaults.core_groups(3, [0, 1])


def test_step_budget_and_kv_cache_follow_the_model(minilm_path):
    # MiniLM's sentence-transformers config caps it at 256 tokens: the 4096-token default step applies
    from mteb_vllm.checkpoint import model_context_length

    assert model_context_length(minilm_path, trust_remote_code=False) == 256
    assert cpu_defaults.cpu_batched_tokens(minilm_path, trust_remote_code=False, max_model_len=None) == 4096
    assert cpu_defaults.cpu_batched_tokens(minilm_path, trust_remote_code=False, max_model_len=8192) == 8192
    size = cpu_defaults.cpu_kv_cache_bytes(minilm_path, trust_remote_code=False, max_model_len=None,
                                           max_num_batched_tokens=4096, dtype="float32")
    ceiling = cpu_defaults.CPU_KV_CACHE_MAX_FRACTION * cpu_defaults.usable_memory()
    assert cpu_defaults.CPU_KV_CACHE_MIN_BYTES <= size <= ceiling


def _cgroup(tmp_path, self_cgroup: str, files: dict[str, str]):
    """A fake cgroup mount under ``tmp_path`` and a fake /proc/self/cgroup; the limit read from them."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "self").write_text(self_cgroup)
    return cpu_defaults.cgroup_memory_limit(tmp_path, tmp_path / "self")


def test_the_cgroup_memory_limit_is_read_for_v2_and_v1(tmp_path):
    assert _cgroup(tmp_path / "a", "0::/\n", {"memory.max": f"{2 * 2**30}\n"}) == 2 * 2**30  # a container's own
    assert _cgroup(tmp_path / "b", "0::/\n", {"memory.max": "max\n"}) is None
    # the process's own cgroup and its ancestors: the smallest limit on the way up counts
    nested = {"jobs/memory.max": "3000000000", "jobs/run7/memory.max": "max"}
    assert _cgroup(tmp_path / "c", "0::/jobs/run7\n", nested) == 3_000_000_000
    v1 = {"memory/memory.limit_in_bytes": "9223372036854771712", "memory/pa/x/memory.limit_in_bytes": "1073741824"}
    assert _cgroup(tmp_path / "d", "4:memory:/pa/x\n0::/\n", v1) == 2**30
    assert _cgroup(tmp_path / "e", "4:memory:/\n", {"memory/memory.limit_in_bytes": "9223372036854771712"}) is None
    assert _cgroup(tmp_path / "f", "0::/\n", {}) is None  # no cgroup files at all (not Linux, no mount)


def test_a_containers_memory_limit_sizes_the_kv_cache_not_the_hosts_ram(tmp_path, monkeypatch, minilm_path):
    """Issue 19: the CPU KV cache was capped at a quarter of the host's RAM, so a container with less memory than
    the host gave its engine more than it may use. The cap now follows the container's memory.max."""
    limit = 2 * 2**30
    (tmp_path / "memory.max").write_text(str(limit))
    (tmp_path / "self").write_text("0::/\n")
    real = cpu_defaults.cgroup_memory_limit
    monkeypatch.setattr(cpu_defaults, "cgroup_memory_limit", lambda: real(tmp_path, tmp_path / "self"))
    assert cpu_defaults.usable_memory() == limit  # less than this machine's RAM
    size = cpu_defaults.cpu_kv_cache_bytes(minilm_path, trust_remote_code=False, max_model_len=None,
                                           max_num_batched_tokens=1_000_000, dtype="float32")
    assert size == cpu_defaults.CPU_KV_CACHE_MAX_FRACTION * limit


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_allocator_tuning_applies_on_glibc_and_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("MTEB_VLLM_MALLOC_TUNING", "0")
    assert cpu_defaults.tune_cpu_allocator() is False
    monkeypatch.delenv("MTEB_VLLM_MALLOC_TUNING")
    assert cpu_defaults.tune_cpu_allocator() is True


@pytest.mark.engine
def test_running_engine_got_the_cpu_defaults(minilm_encoder):
    """The shared engine was started with the CPU defaults the user did not override."""
    backend = minilm_encoder.engine
    if not backend.on_cpu:
        pytest.skip("CPU defaults only apply on CPU")
    vllm_config = backend.llm.llm_engine.vllm_config
    assert vllm_config.cache_config.block_size == cpu_defaults.CPU_BLOCK_SIZE
    assert vllm_config.scheduler_config.max_num_batched_tokens == cpu_defaults.CPU_MAX_NUM_BATCHED_TOKENS
    # in-process: a test that loads bm25s (which forces worker processes) runs after this one (conftest)
    assert backend.in_process, backend.mode_reason
    assert gc.isenabled(), "the collector paused for the engine start must be running again"
