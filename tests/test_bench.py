"""`mteb-vllm bench` end to end on a small configuration: JSON, markdown and a PNG that opens."""

import json

import pytest

from mteb_vllm.bench import BenchConfig, run_bench, workload_texts

pytestmark = pytest.mark.engine


def test_fixed_workload_has_the_asked_token_count(minilm_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    lengths = {len(ids) for ids in tok(workload_texts("fixed-32", 20))["input_ids"]}
    assert lengths == {32}


def test_bench_small_configuration(minilm_path, tmp_path):
    config = BenchConfig(model=minilm_path, model_name="sentence-transformers/all-MiniLM-L6-v2",
                         backends=["vllm", "st", "mteb-builtin"], dtypes=["float32", "bfloat16"],
                         batch_sizes=[4, 16], input_len=32, variable_length=True, n=32,
                         output_folder=str(tmp_path))
    report = run_bench(config, progress=False)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data == json.loads(json.dumps(report))
    measured = {(p["backend"], p["dtype"], p["batch_size"], p["workload"]) for p in data["points"]}
    skipped = {(s["backend"], s["dtype"]) for s in data["skipped"]}
    for backend in config.backends:
        for dtype in config.dtypes:
            if (backend, dtype) in skipped:
                continue
            for bs in config.batch_sizes:
                for workload in ("fixed-32", "variable"):
                    assert (backend, dtype, bs, workload) in measured
    assert {("vllm", "float32"), ("st", "float32"), ("mteb-builtin", "float32")} - skipped == \
        {("vllm", "float32"), ("st", "float32"), ("mteb-builtin", "float32")}
    assert all(s["reason"] for s in data["skipped"])  # a skip always says why
    assert all("emulated" in s["reason"] for s in data["skipped"])  # only a precision the CPU lacks is skipped
    assert data["failed"] == []  # a backend that crashed fails the run; it is never counted as a skip
    for p in data["points"]:
        assert p["tokens_per_s"] > 0 and p["latency_ms_p50"] > 0 and 0 < p["peak_fraction"] < 2
    assert data["matmul_peak_gflops"]["float32"] > 0
    png = (tmp_path / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(png) < 500_000
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "bench.png").ndim == 3
    assert "| vllm | float32 | fixed-32 | 4 |" in (tmp_path / "bench.md").read_text()


def test_bad_configuration_is_refused_before_running():
    with pytest.raises(ValueError, match="unknown backend"):
        BenchConfig(model="x", backends=["onnx"])
    with pytest.raises(ValueError, match="at least the largest batch size"):
        BenchConfig(model="x", batch_sizes=[64], n=8)
