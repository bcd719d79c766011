"""The embedding/score cache: nothing computed twice, nothing stale, nothing damaged ever returned.

Counts are taken at the backend (FakeBackend.inputs_seen, the engine's own start flag), never from the cache's
own counters. The real-engine case (lazy start) is marked ``engine``; kill -9 of a real CLI run in the middle of
an encode is in test_hostile_inputs.py, with the other signals.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mteb_vllm import VllmCrossEncoderWrapper, VllmEncoderWrapper
from mteb_vllm.backends.cached import CachedBackend
from mteb_vllm.cache_store import cache_info, clear_cache, compact_cache, verify_cache
from mteb_vllm.testing import FakeBackend

TEXTS = [f"sentence number {i} about rivers and mountains" for i in range(300)]


def _encoder(cache_dir, backend=None, **kwargs):
    backend = backend or FakeBackend()
    return VllmEncoderWrapper("fake/encoder", backend=backend, cache_dir=cache_dir, **kwargs), backend


def test_a_second_identical_run_computes_nothing_and_is_bit_identical(tmp_path):
    first, backend = _encoder(tmp_path)
    a = first.embed_texts(TEXTS)
    assert backend.inputs_seen == len(TEXTS)
    second, backend2 = _encoder(tmp_path)
    b = second.embed_texts(TEXTS)
    assert backend2.inputs_seen == 0
    assert a.tobytes() == b.tobytes()
    partly, backend3 = _encoder(tmp_path)
    partly.embed_texts(TEXTS[:100] + ["a new sentence"])
    assert backend3.inputs_seen == 1
    assert partly.backend.last.cached == 100 and partly.backend.last.computed == 1


def test_rerankers_are_cached_on_the_exact_pair(tmp_path):
    queries, docs = ["cats"] * 50, [f"document {i} about cats" for i in range(50)]
    first = VllmCrossEncoderWrapper("fake/reranker", backend=FakeBackend(), cache_dir=tmp_path)
    a = first.score_pairs(queries, docs)
    backend = FakeBackend()
    second = VllmCrossEncoderWrapper("fake/reranker", backend=backend, cache_dir=tmp_path)
    assert second.score_pairs(queries, docs).tobytes() == a.tobytes() and backend.inputs_seen == 0
    second.score_pairs(["dogs"] * 50, docs)  # another query: other pairs, other entries
    assert backend.inputs_seen == 50


def test_the_same_text_under_another_prompt_is_another_entry(tmp_path):
    plain, _ = _encoder(tmp_path)
    plain.embed_texts(TEXTS[:10])
    prompted, backend = _encoder(tmp_path, prompt_dict={"STS": "Represent this: "})
    from mteb.mocks.mock_tasks.sts import MockSTSTask

    prompted.encode([{"text": TEXTS[:10]}], task_metadata=MockSTSTask().metadata, hf_split="test",
                    hf_subset="default")
    assert backend.inputs_seen == 10


@pytest.mark.parametrize("change", ["dtype", "max_model_len", "revision", "model", "template"])
def test_anything_that_changes_the_numbers_misses_the_cache(tmp_path, change):
    def make(**overrides):
        from mteb_vllm.config import EngineConfig
        from mteb_vllm.templates import QWEN3_RERANKER

        base = dict(model="fake/encoder", dtype="float32", max_model_len=128, revision="a" * 40)
        cfg = EngineConfig(**{**base, **{k: v for k, v in overrides.items() if k != "template"}})
        if "template" in overrides:
            import dataclasses

            cfg = dataclasses.replace(cfg, score_template=QWEN3_RERANKER)
        inner = FakeBackend(cfg)
        return CachedBackend(inner, tmp_path, config=cfg), inner

    from mteb_vllm.backends.protocol import TokenizedInput

    inputs = [TokenizedInput([2, 10 + i, 3]) for i in range(20)]
    cached, _ = make()
    cached.pool(inputs, "embed")
    again, inner = make()
    again.pool(inputs, "embed")
    assert inner.inputs_seen == 0
    changed = {"dtype": {"dtype": "bfloat16"}, "max_model_len": {"max_model_len": 64}, "revision": {"revision": "b" * 40},
               "model": {"model": "fake/other"}, "template": {"template": True}}[change]
    other, inner = make(**changed)
    other.pool(inputs, "embed")
    assert inner.inputs_seen == 20
    assert len(cache_info(tmp_path).namespaces) == 2


def _rows(path: Path) -> list[tuple[bytes, bytes]]:
    (db,) = path.glob("*.sqlite")
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT key, data FROM items").fetchall()


def test_flipped_bytes_are_detected_never_returned_and_computed_again(tmp_path, caplog):
    first, _ = _encoder(tmp_path)
    expected = first.embed_texts(TEXTS[:20])
    first.close()
    (db,) = tmp_path.glob("*.sqlite")
    with sqlite3.connect(db) as conn:
        key, data = conn.execute("SELECT key, data FROM items LIMIT 1").fetchone()
        flipped = bytes([data[0] ^ 0xFF]) + data[1:]
        conn.execute("UPDATE items SET data=? WHERE key=?", (flipped, key))
    assert [r.damaged for r in verify_cache(tmp_path)] == [1]
    second, backend = _encoder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        got = second.embed_texts(TEXTS[:20])
    assert "damaged entry" in caplog.text and backend.inputs_seen == 1
    np.testing.assert_array_equal(got, expected)
    assert [r.damaged for r in verify_cache(tmp_path)] == [0]  # the bad row was replaced


def test_a_truncated_cache_file_is_moved_aside_and_recomputed(tmp_path, caplog):
    first, _ = _encoder(tmp_path)
    expected = first.embed_texts(TEXTS[:20])
    first.close()
    (db,) = tmp_path.glob("*.sqlite")
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(db.read_bytes()[:300])  # torn in the middle of its header page
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        second, backend = _encoder(tmp_path)
        got = second.embed_texts(TEXTS[:20])
    assert "is damaged" in caplog.text and list(tmp_path.glob("*.corrupt-*"))
    assert backend.inputs_seen == 20
    np.testing.assert_array_equal(got, expected)


def test_a_lost_write_ahead_log_loses_only_uncheckpointed_entries(tmp_path):
    """Deleting the -wal file (the 'key file' of an unfinished checkpoint) must not give wrong vectors."""
    first, _ = _encoder(tmp_path)
    expected = first.embed_texts(TEXTS[:30])
    (db,) = tmp_path.glob("*.sqlite")
    Path(f"{db}-wal").unlink(missing_ok=True)  # while the writer still has the file open
    first.close()
    second, backend = _encoder(tmp_path)
    got = second.embed_texts(TEXTS[:30])
    np.testing.assert_array_equal(got, expected)
    assert backend.inputs_seen <= 30


def test_a_full_disk_warns_and_the_run_goes_on_uncached(tmp_path, caplog):
    inner = FakeBackend()
    backend = CachedBackend(inner, tmp_path, max_bytes=64 * 1024)  # room for a few dozen rows only
    wrapper = VllmEncoderWrapper("fake/encoder", backend=backend)
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        out = wrapper.embed_texts(TEXTS * 2 + [f"more {i}" for i in range(1000)])
    assert "cannot be written" in caplog.text and "results are not affected" in caplog.text
    texts = TEXTS * 2 + [f"more {i}" for i in range(1000)]
    assert out.shape[0] == len(texts)
    np.testing.assert_array_equal(out, VllmEncoderWrapper("fake/encoder", backend=FakeBackend()).embed_texts(texts))


def test_a_cache_folder_that_cannot_be_created_warns_and_runs_uncached(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        wrapper, backend = _encoder(blocker / "cache")
    assert "cannot be created" in caplog.text and "running without the cache" in caplog.text
    assert wrapper.embed_texts(TEXTS[:5]).shape == (5, backend.dim) and backend.inputs_seen == 5


def test_non_finite_rows_are_never_stored(tmp_path):
    inner = FakeBackend(auto_dtype="bfloat16", nonfinite_dtypes=("bfloat16",))
    backend = CachedBackend(inner, tmp_path)
    from mteb_vllm.backends.protocol import TokenizedInput

    out = backend.pool([TokenizedInput([2, 5, 3]), TokenizedInput([2, 6, 3])], "embed")
    assert np.isnan(out[0]).all() and len(_rows(tmp_path)) == 1


def test_a_file_another_process_is_setting_up_is_waited_for_not_run_without(tmp_path, monkeypatch):
    """Processes opening a new cache file at once race to set it up, and SQLite answers one of them "database is
    locked" at once, busy timeout or not (about 1 open in 100 with 4 processes): that one used to run uncached.
    Here the first two set-ups of this process meet that answer; the store waits and opens the file."""
    from mteb_vllm.cache_store import Namespace

    real, refused = Namespace._set_up, []

    def locked_twice(self, conn):
        if len(refused) < 2:
            refused.append(1)
            raise sqlite3.OperationalError("database is locked")
        return real(self, conn)

    monkeypatch.setattr(Namespace, "_set_up", locked_twice)
    encoder, backend = _encoder(tmp_path)
    encoder.embed_texts(TEXTS[:10])
    assert len(refused) == 2 and backend.inputs_seen == 10
    assert encoder.backend.namespace.count() == 10  # stored: the cache is on


def _writer(cache_dir: str, offset: int, count: int) -> None:
    wrapper = VllmEncoderWrapper("fake/encoder", backend=FakeBackend(), cache_dir=cache_dir)
    for start in range(offset, offset + count, 50):  # many small commits, interleaving with the other process
        wrapper.embed_texts([f"text {i}" for i in range(start, start + 50)])


@pytest.mark.slow  # two spawned Python processes importing mteb: most of the fast tier's time otherwise
def test_two_processes_writing_one_folder_lose_and_mix_nothing(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), offset, 1500)) for offset in (0, 1000)]  # overlap
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    texts = [f"text {i}" for i in range(2500)]
    reader, backend = _encoder(tmp_path)
    got = reader.embed_texts(texts)
    assert backend.inputs_seen == 0  # every entry of both writers is there
    np.testing.assert_array_equal(got, VllmEncoderWrapper("fake/encoder", backend=FakeBackend()).embed_texts(texts))
    assert [r.damaged for r in verify_cache(tmp_path)] == [0]


def test_cache_commands_report_compact_and_clear(tmp_path):
    first, _ = _encoder(tmp_path)
    first.embed_texts(TEXTS)
    other = VllmEncoderWrapper("fake/encoder", backend="fake", dtype="bfloat16", cache_dir=tmp_path)
    other.embed_texts(TEXTS[:10])
    info = cache_info(tmp_path)
    assert sorted(n.entries for n in info.namespaces) == [10, len(TEXTS)]
    assert {n.dtype for n in info.namespaces} == {"float32", "bfloat16"} and info.bytes > 0
    assert compact_cache(tmp_path) >= 0
    assert clear_cache(tmp_path, model="no-such-model").removed == 0
    assert clear_cache(tmp_path).removed == 2 and cache_info(tmp_path).namespaces == []


# --- the real engine and the real CLI -----------------------------------------------------------------------
@pytest.mark.engine
def test_a_fully_cached_run_never_starts_the_engine(minilm_path, minilm_encoder, tmp_path):
    import mteb

    from mteb_vllm import demo_tasks

    # the session's engine fills the cache (the entries are the model's, whichever engine computed them)
    with VllmEncoderWrapper(minilm_path, dtype="float32", cache_dir=tmp_path, backend=minilm_encoder.backend) as first:
        a = {r.task_name: r.get_score() for r in mteb.evaluate(first, demo_tasks(), cache=None,
                                                                 show_progress_bar=False).task_results}
        assert first.backend.stats.computed > 0
    with VllmEncoderWrapper(minilm_path, dtype="float32", cache_dir=tmp_path, lazy_start=True) as second:
        b = {r.task_name: r.get_score() for r in mteb.evaluate(second, demo_tasks(), cache=None,
                                                                 show_progress_bar=False).task_results}
        assert not second.backend.started  # the engine itself says it never ran
        assert second.backend.stats.computed == 0
    assert a == b


def test_pieces_hold_about_flush_seconds_of_work_at_the_measured_rate(tmp_path, monkeypatch):
    """A slow model commits often (a kill loses little); the first piece is small, to measure the rate."""
    from mteb_vllm.backends import cached
    from mteb_vllm.backends.protocol import TokenizedInput

    monkeypatch.setattr(cached, "FLUSH_SECONDS", 0.0125)
    monkeypatch.setattr(cached, "MIN_FLUSH_TOKENS", 100)
    inner = FakeBackend(seconds_per_token=2.5e-5)  # 40,000 tokens/s at most: 0.0125 s is <= 500 tokens
    inputs = [TokenizedInput([2] + [10 + i] * 8 + [3]) for i in range(300)]  # 10 tokens each
    out = CachedBackend(inner, tmp_path).pool(inputs, "embed")
    tokens = [call.tokens for call in inner.calls]
    assert out.shape[0] == 300 and sum(tokens) == 3000
    assert tokens[0] <= 100 and len(tokens) >= 6 and max(tokens[1:]) <= 500, tokens


def test_pieces_are_never_smaller_than_what_a_fleet_holds_in_flight(tmp_path):
    from mteb_vllm.backends.protocol import TokenizedInput

    class Fleet(FakeBackend):
        capacity = (8192, 100_000)  # as RemoteBackend.capacity reports it

    inputs = [TokenizedInput([2, 10 + i % 1000, 3]) for i in range(5000)]
    alone, fleet = FakeBackend(), Fleet()
    CachedBackend(alone, tmp_path / "a").pool(inputs, "embed")
    CachedBackend(fleet, tmp_path / "b").pool(inputs, "embed")
    assert [c.inputs for c in alone.calls] == [4096, 904]  # FLUSH_ROWS bounds a piece for one engine
    assert [c.inputs for c in fleet.calls] == [5000]  # the fleet gets all of it at once


class _Engine(FakeBackend):
    """A FakeBackend that says it is the local engine (``kind`` decides the fingerprint's engine part)."""

    kind = "local"

    def __init__(self, config=None, *, vllm="0.32.0", **kwargs):
        super().__init__(config, **kwargs)
        self.vllm, self.on_cpu = vllm, True

    @property
    def info(self):
        from mteb_vllm.backends.protocol import BackendInfo

        return BackendInfo(kind=self.kind, model=self.model, revision=self.revision, dtype=self.dtype,
                           max_model_len=self.max_model_len, details={"vllm": self.vllm})


class _Fleet(_Engine):
    kind = "remote"

    def __init__(self, config=None, *, urls=("http://node1:8000",), **kwargs):
        super().__init__(config, **kwargs)
        self.urls = tuple(urls)

    @property
    def info(self):
        import dataclasses

        return dataclasses.replace(super().info, endpoints=self.urls)  # as RemoteBackend reports its endpoints


def _float32():
    from mteb_vllm.config import EngineConfig

    return EngineConfig(model="fake/encoder", dtype="float32", revision="a" * 40)


def test_a_fleet_never_fills_the_local_engines_namespace_even_at_the_same_precision(tmp_path):
    """N17: a fleet run with --dtype float32 wrote into the namespace a later local float32 run read."""
    from mteb_vllm.backends.protocol import TokenizedInput

    inputs = [TokenizedInput([2, 10 + i, 3]) for i in range(20)]
    fleet = _Fleet(_float32(), dim=32)  # serves other vectors (another checkpoint, another width)
    CachedBackend(fleet, tmp_path, config=_float32()).pool(inputs, "embed")
    local = _Engine(_float32())
    out = CachedBackend(local, tmp_path, config=_float32()).pool(inputs, "embed")
    assert local.inputs_seen == 20 and out.shape == (20, 64)
    kinds = sorted(n.backend for n in cache_info(tmp_path).namespaces)
    assert kinds == ["local", "remote (http://node1:8000)"]


def test_a_new_vllm_torch_or_device_is_a_new_namespace_never_a_warning(tmp_path, monkeypatch):
    from mteb_vllm import device, identity
    from mteb_vllm.backends.protocol import TokenizedInput

    inputs = [TokenizedInput([2, 10 + i, 3]) for i in range(20)]

    def run(**kwargs):
        inner = _Engine(_float32(), **kwargs)
        CachedBackend(inner, tmp_path, config=_float32()).pool(inputs, "embed")
        return inner.inputs_seen

    assert run() == 20 and run() == 0
    assert run(vllm="0.33.0") == 20
    monkeypatch.setattr(identity, "_version", lambda *dists: "9.9.9" if dists == ("torch",) else "0.32.0")
    assert run() == 20
    monkeypatch.setattr(device, "cpu_class", lambda: "cpu x86_64 Other CPU [avx2]")
    assert run() == 20
    (shown,) = [n for n in cache_info(tmp_path).namespaces if "Other CPU" in n.engine.get("device", "")]
    assert shown.engine["torch"] == "9.9.9" and shown.vllm == "0.32.0" and shown.backend == "local"


def test_the_device_class_is_named_without_initialising_cuda():
    import subprocess

    code = ("import sys; from mteb_vllm.device import device_class; print(device_class(True)); "
            "print(device_class(False)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.split("\n")
    assert out[0].startswith("cpu ") and out[1].startswith("gpu ") and out[2] == "False"


def test_endpoint_credentials_never_reach_the_manifest(tmp_path):
    from mteb_vllm.backends.protocol import TokenizedInput

    fleet = _Fleet(_float32(), urls=("http://user:sekret@node1:8000/",))
    CachedBackend(fleet, tmp_path, config=_float32()).pool([TokenizedInput([2, 5, 3])], "embed")
    assert all("sekret" not in p.read_text(errors="replace") for p in tmp_path.glob("*.json"))
    assert [n.backend for n in cache_info(tmp_path).namespaces] == ["remote (http://node1:8000)"]


class _GpuLikeBackend(FakeBackend):
    """Under dtype="auto" it knows its precision only once started, as a lazily started GPU engine does."""

    def __init__(self, config=None, *, resolves_to: str):
        super().__init__(config)
        self.dtype, self.resolves_to, self.started = "auto", resolves_to, False

    def start(self):
        self.started, self.dtype = True, self.resolves_to


def test_a_precision_chosen_at_engine_start_gets_its_own_namespace(tmp_path):
    """A V100 (float16) and an A100 (bfloat16) run of dtype="auto" must not share entries."""
    from mteb_vllm.backends.protocol import TokenizedInput

    inputs = [TokenizedInput([2, 10 + i, 3]) for i in range(20)]
    a100 = _GpuLikeBackend(resolves_to="bfloat16")
    first = CachedBackend(a100, tmp_path)
    assert not a100.started and "first call" in first.info.details["cache"]
    first.pool(inputs, "embed")
    assert a100.started and a100.inputs_seen == 20
    v100 = _GpuLikeBackend(resolves_to="float16")
    CachedBackend(v100, tmp_path).pool(inputs, "embed")
    assert v100.inputs_seen == 20, "float16 run served the bfloat16 run's vectors"
    assert sorted(n.dtype for n in cache_info(tmp_path).namespaces) == ["bfloat16", "float16"]
    again = _GpuLikeBackend(resolves_to="bfloat16")
    CachedBackend(again, tmp_path).pool(inputs, "embed")
    assert again.inputs_seen == 0


@pytest.mark.parametrize("kwargs, hit", [({"kv_cache_dtype": "fp8"}, False), ({"load_format": "dummy"}, False),
                                         ({"model_impl": "transformers"}, False), ({"block_size": 64}, True),
                                         ({"seed": 7}, True)])
def test_pass_through_engine_args_miss_the_cache_unless_they_only_schedule(tmp_path, kwargs, hit):
    from mteb_vllm.backends.protocol import TokenizedInput
    from mteb_vllm.config import EngineConfig

    inputs = [TokenizedInput([2, 10 + i, 3]) for i in range(20)]
    plain = EngineConfig(model="fake/encoder", dtype="float32", revision="a" * 40)
    CachedBackend(FakeBackend(plain), tmp_path, config=plain).pool(inputs, "embed")
    tuned = EngineConfig(model="fake/encoder", dtype="float32", revision="a" * 40, engine_kwargs=kwargs)
    inner = FakeBackend(tuned)
    CachedBackend(inner, tmp_path, config=tuned).pool(inputs, "embed")
    assert inner.inputs_seen == (0 if hit else 20)


def test_threads_sharing_one_cached_backend_store_every_entry(tmp_path, caplog):
    import threading

    from mteb_vllm.backends.protocol import TokenizedInput

    backend = CachedBackend(FakeBackend(), tmp_path)

    def work(t):
        for call in range(50):
            backend.pool([TokenizedInput([2, t, call, i, 3]) for i in range(4)], "embed")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert "cannot be written" not in caplog.text and backend.namespace.writable
    assert backend.namespace.count() == 4 * 50 * 4


def test_a_file_that_cannot_be_opened_is_not_taken_for_damage(tmp_path, caplog):
    """A full disk (here: a size cap below what a new file needs) is a warning and an uncached run; the file is
    not moved aside as damaged and the wrapper is still built."""
    from mteb_vllm.backends.protocol import TokenizedInput

    inner = FakeBackend()
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        backend = CachedBackend(inner, tmp_path, max_bytes=3 * 4096)
    assert "running without the cache" in caplog.text and "damaged" not in caplog.text
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert backend.pool([TokenizedInput([2, 5, 3])], "embed").shape == (1, inner.dim)


def test_damaged_copies_are_counted_kept_apart_and_cleared_and_compact_skips_a_bad_file(tmp_path, caplog):
    from mteb_vllm.cache_store import _aside_name

    first, _ = _encoder(tmp_path)
    first.embed_texts(TEXTS[:20])
    first.close()
    (good,) = tmp_path.glob("*.sqlite")
    a = _aside_name(good)
    a.write_bytes(b"x" * 100)
    b = _aside_name(good)  # the same second: another name, never over the first copy
    assert b != a
    b.write_bytes(b"y" * 50)
    broken = tmp_path / ("b" * 24 + ".sqlite")  # a namespace of ours whose file is damaged
    broken.write_bytes(b"not a database at all" * 100)
    broken.with_suffix(".json").write_text(json.dumps({"fingerprint": "b" * 24, "fields": {}}))
    info = cache_info(tmp_path)
    assert sorted(info.damaged_copies) == sorted([a, b]) and info.damaged_bytes == 150
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        compact_cache(tmp_path)  # the unreadable file is reported and skipped, the good one still compacted
    assert f"{broken.name} was not compacted" in caplog.text
    assert [r.entries for r in verify_cache(tmp_path) if r.fingerprint == good.stem and r.structure == "ok"] == [20]
    clear_cache(tmp_path)
    assert not list(tmp_path.glob("*.corrupt-*")) and not list(tmp_path.glob("*.sqlite"))


def test_half_precision_nan_on_a_shared_engine_is_not_restarted_behind_the_cache(tmp_path, caplog):
    """A shared backend cannot be restarted in float32 by one wrapper, cached or not: the error comes at once."""
    from mteb_vllm.errors import NonFiniteOutputError

    shared = FakeBackend(auto_dtype="bfloat16", nonfinite_dtypes=("bfloat16",))
    wrapper = VllmEncoderWrapper("fake/encoder", backend=shared, cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"), pytest.raises(NonFiniteOutputError):
        wrapper.embed_texts(TEXTS[:10])
    assert "restarting" not in caplog.text and shared.inputs_seen == 10


# --- identity of a local folder, ownership of files, damage in the middle, --overwrite -------------------------
def test_changed_bytes_with_the_old_size_and_mtime_get_a_new_revision(tmp_path, monkeypatch, caplog):
    """N34: `cp -p`, `rsync -a`, `tar x` and `touch -r` restore size and mtime; the content hash must still see the
    new bytes (the remembered digest is keyed by inode, size, mtime and ctime, and ctime cannot be set back)."""
    from mteb_vllm import identity as model_config

    monkeypatch.setenv("MTEB_VLLM_CACHE", str(tmp_path / "user-cache"))
    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\x01" * 4096)
    (folder / "config.json").write_text("{}")
    before = model_config.local_revision(str(folder))
    assert model_config.local_revision(str(folder)) == before  # remembered: the same answer
    stat = weights.stat()
    time.sleep(0.05)  # ctime moves with the clock tick of the write below
    with open(weights, "r+b") as fh:  # new bytes in place: same inode, same size ...
        fh.write(b"\x02" * 16)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and the old mtime (touch -r)
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    monkeypatch.setattr(model_config, "HASH_NOTICE_SECONDS", 0.0)
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        after = model_config.local_revision(str(folder))
    assert after != before
    assert "hashed 1 changed or new file(s)" in caplog.text  # and it says how long that took
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        assert model_config.local_revision(str(folder)) == after
    assert "hashed" not in caplog.text  # nothing changed: nothing read again


def _foreign_folder(folder: Path) -> dict[Path, bytes]:
    """A user's own files: a SQLite database with a same-named .json, and a database named like a namespace."""
    folder.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(folder / "customers.sqlite") as conn:
        conn.execute("CREATE TABLE customers (name TEXT)")
        conn.execute("INSERT INTO customers VALUES ('ada')")
    conn.close()
    (folder / "customers.json").write_text('{"owner": "me"}')
    with sqlite3.connect(folder / ("c" * 24 + ".sqlite")) as conn:
        conn.execute("CREATE TABLE meta (name TEXT, value TEXT)")  # even a 'meta' table is not our marker
        conn.execute("INSERT INTO meta VALUES ('manifest', '{}')")
    conn.close()
    return {p: p.read_bytes() for p in (folder / "customers.sqlite", folder / "customers.json",
                                        folder / ("c" * 24 + ".sqlite"))}


def test_cache_commands_touch_only_files_the_cache_created(tmp_path, capsys):
    """N38: `cache clear --cache-dir ~/myproject` deleted a user's database; `compact` vacuumed it."""
    from mteb_vllm.cli import main

    mine = _foreign_folder(tmp_path / "myproject")
    assert main(["cache", "clear", "--cache-dir", str(tmp_path / "myproject")]) == 1
    assert "not an mteb-vllm cache folder" in capsys.readouterr().err
    for action in (["compact"], ["verify", "--repair"], ["info"]):
        assert main(["cache", *action, "--cache-dir", str(tmp_path / "myproject")]) == 1
    assert {p: p.read_bytes() for p in (tmp_path / "myproject").iterdir()} == mine
    # the same files inside a real cache folder: the cache's own go, the user's stay, byte for byte
    cache = tmp_path / "cache"
    wrapper, _ = _encoder(cache)
    wrapper.embed_texts(TEXTS[:10])
    wrapper.close()
    theirs = _foreign_folder(cache)
    info = cache_info(cache)
    assert len(info.namespaces) == 1 and sorted(p.name for p in info.foreign) == ["c" * 24 + ".sqlite",
                                                                              "customers.sqlite"]
    compact_cache(cache)
    assert all(r.healthy for r in verify_cache(cache, repair=True))
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "were not created by mteb-vllm and were left alone" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in cache.iterdir()} == theirs


def test_clear_model_needs_an_exact_name_or_an_explicit_pattern(tmp_path, capsys):
    """N39: `--model ""` wiped the whole cache; `--model e5` every model whose name contains "e5"."""
    from mteb_vllm.cli import main

    for name in ("acme/e5-small", "acme/multilingual-e5-large", "other/bge-small"):
        w = VllmEncoderWrapper(name, backend="fake", cache_dir=tmp_path)
        w.embed_texts(TEXTS[:3])
        w.close()
    assert main(["cache", "clear", "--cache-dir", str(tmp_path), "--model", ""]) == 2
    assert main(["cache", "clear", "--cache-dir", str(tmp_path), "--model", "  "]) == 2
    assert len(cache_info(tmp_path).namespaces) == 3
    assert main(["cache", "clear", "--cache-dir", str(tmp_path), "--model", "e5"]) == 0
    assert "no namespace of a model named 'e5'" in capsys.readouterr().err
    assert main(["cache", "clear", "--cache-dir", str(tmp_path), "--model", "acme/e5-small"]) == 0
    assert sorted(n.name for n in cache_info(tmp_path).namespaces) == ["acme/multilingual-e5-large",
                                                                      "other/bge-small"]
    assert main(["cache", "clear", "--cache-dir", str(tmp_path), "--model", "acme/*"]) == 0
    assert [n.name for n in cache_info(tmp_path).namespaces] == ["other/bge-small"]


def _damage_middle(db: Path) -> None:
    """4 KB of random bytes over a page in the middle of the file (N29), the header left intact."""
    import random

    for suffix in ("-wal", "-shm"):
        assert not Path(f"{db}{suffix}").exists()  # the writer closed: everything is in the main file
    data = bytearray(db.read_bytes())
    middle = (len(data) // 4096 // 2) * 4096
    data[middle:middle + 4096] = random.Random(7).randbytes(4096)
    db.write_bytes(bytes(data))


def test_a_file_damaged_in_the_middle_is_moved_aside_once_and_repair_puts_its_entries_back(tmp_path, caplog,
                                                                                              capsys):
    """N29: the file stayed in use and every run recomputed the entries on the damaged page, forever."""
    from mteb_vllm.cli import main

    first, _ = _encoder(tmp_path)
    expected = first.embed_texts(TEXTS)
    first.close()
    (db,) = tmp_path.glob("*.sqlite")
    _damage_middle(db)
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        second, backend = _encoder(tmp_path)
        np.testing.assert_array_equal(second.embed_texts(TEXTS), expected)
        second.close()
    assert "is damaged" in caplog.text and "moved it to" in caplog.text and backend.inputs_seen == len(TEXTS)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        third, backend = _encoder(tmp_path)
        np.testing.assert_array_equal(third.embed_texts(TEXTS), expected)
        third.close()
    assert backend.inputs_seen == 0 and caplog.text == ""  # computed once, never again
    (copy,) = cache_info(tmp_path).damaged_copies
    assert main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 1  # the copy is reported
    assert main(["cache", "verify", "--repair", "--cache-dir", str(tmp_path)]) == 0
    assert "rebuilt:" in capsys.readouterr().out and not copy.exists()
    assert main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 0


def test_verify_repair_rebuilds_a_file_damaged_in_the_middle_from_its_readable_entries(tmp_path, capsys):
    from mteb_vllm.cli import main

    first, _ = _encoder(tmp_path)
    expected = first.embed_texts(TEXTS)
    first.close()
    (db,) = tmp_path.glob("*.sqlite")
    _damage_middle(db)
    assert main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 1
    assert "malformed" in capsys.readouterr().out
    assert main(["cache", "verify", "--repair", "--cache-dir", str(tmp_path)]) == 0
    (report,) = verify_cache(tmp_path)
    assert report.structure == "ok" and report.healthy and 0 < report.entries < len(TEXTS)
    assert not cache_info(tmp_path).damaged_copies  # the damaged file is gone, its good rows are kept
    again, backend = _encoder(tmp_path)
    np.testing.assert_array_equal(again.embed_texts(TEXTS), expected)
    assert backend.inputs_seen == len(TEXTS) - report.entries  # only what was lost is computed


def test_verify_repair_that_cannot_repair_exits_1_and_says_why(tmp_path, capsys, monkeypatch):
    from mteb_vllm import cache_store
    from mteb_vllm.cli import main

    first, _ = _encoder(tmp_path)
    first.embed_texts(TEXTS)
    first.close()
    (db,) = tmp_path.glob("*.sqlite")
    _damage_middle(db)

    def read_only(path):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(cache_store, "move_aside", read_only)
    assert main(["cache", "verify", "--repair", "--cache-dir", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "not repaired: cannot move it aside" in out.out and "Read-only file system" in out.out
    assert "could not be repaired" in out.err


def test_overwrite_computes_every_input_again_and_replaces_the_cached_entry(tmp_path):
    """N47/N18/N34: `--overwrite` evaluated the tasks again from the cached vectors (108 cached, 0 computed)."""
    import zlib

    from mteb.mocks.mock_tasks.sts import MockSTSTask

    from mteb_vllm.backends.cached import refreshing
    from mteb_vllm.runner import run_tasks

    cache, results = tmp_path / "cache", tmp_path / "results"
    model, backend = _encoder(cache)
    first = run_tasks(model, [MockSTSTask()], output_folder=results, show_progress_bar=False)
    unique = backend.inputs_seen
    (db,) = cache.glob("*.sqlite")
    with sqlite3.connect(db) as conn:  # stale but intact entries: what another engine once computed
        for key, data in conn.execute("SELECT key, data FROM items").fetchall():
            stale = np.frombuffer(data, np.float32)[::-1].tobytes()
            conn.execute("UPDATE items SET data=?, crc=? WHERE key=?", (stale, zlib.crc32(key + stale), key))
    conn.close()
    model, backend = _encoder(cache)
    summary = run_tasks(model, [MockSTSTask()], output_folder=results, overwrite=True, show_progress_bar=False)
    assert backend.inputs_seen == unique and [(o.cached, o.computed) for o in summary.outcomes] == [(0, unique)]
    assert summary.outcomes[0].score == pytest.approx(first.outcomes[0].score, abs=1e-12)  # not the stale one
    fresh, backend = _encoder(cache)  # the recomputed vectors replaced the stale ones for every later run
    resumed = run_tasks(fresh, [MockSTSTask()], output_folder=tmp_path / "again", show_progress_bar=False)
    assert backend.inputs_seen == 0 and resumed.outcomes[0].score == summary.outcomes[0].score
    shared, backend = _encoder(cache)
    with refreshing():  # what was computed inside is shared (two tasks with one corpus compute it once)
        shared.embed_texts(TEXTS[:5])
        shared.embed_texts(TEXTS[:5])
    assert backend.inputs_seen == 5


def test_a_cache_that_fell_back_to_off_reports_no_cached_or_computed_counts(tmp_path, caplog):
    """N36: a read-only or unusable cache folder ran uncached, yet the table showed cached/computed columns."""
    from mteb.mocks.mock_tasks.sts import MockSTSTask

    from mteb_vllm.runner import run_tasks

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING, logger="mteb_vllm"):
        model, backend = _encoder(blocker / "cache")
        summary = run_tasks(model, [MockSTSTask()], output_folder=tmp_path / "results", show_progress_bar=False)
    assert "running without the cache" in caplog.text and backend.inputs_seen > 0
    assert model.backend.stats is None
    assert [(o.cached, o.computed) for o in summary.outcomes] == [(None, None)]


def test_entries_stored_after_a_clear_during_the_run_are_kept(tmp_path):
    """N32: `cache clear` while a run writes; the rows written after it went to the unlinked file."""
    running, _ = _encoder(tmp_path)
    running.embed_texts(TEXTS[:10])
    assert clear_cache(tmp_path).removed == 1
    running.embed_texts(TEXTS[10:20])
    later, backend = _encoder(tmp_path)
    later.embed_texts(TEXTS[10:20])
    assert backend.inputs_seen == 0


def test_a_cached_backend_shared_into_another_cached_wrapper_keeps_the_engines_identity(tmp_path):
    from mteb_vllm.identity import engine_identity

    inner = _Engine(_float32())
    shared = CachedBackend(inner, tmp_path / "a", config=_float32())
    assert engine_identity(CachedBackend(shared, tmp_path / "b", config=_float32())) == engine_identity(inner)
    assert engine_identity(inner)["vllm"] == "0.32.0" and engine_identity(inner)["device"].startswith("cpu ")
