"""`mteb-vllm bench` end to end on a small configuration (JSON, markdown and a PNG that opens), and the rules
every row follows (trust_remote_code, usage errors) without an engine."""

import json
import os
import shutil

import pytest

from mteb_vllm.bench import BACKENDS, BenchConfig, run_bench, workload_texts
from mteb_vllm.errors import RemoteCodeError, UsageError


def test_fixed_workload_has_the_asked_token_count(minilm_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    lengths = {len(ids) for ids in tok(workload_texts("fixed-32", 20))["input_ids"]}
    assert lengths == {32}


@pytest.mark.engine
def test_bench_measures_a_real_engine_and_reports_what_it_measured(minilm_path, tmp_path):
    """A real child (our engine) on a small configuration; every figure of the report is the arithmetic of what
    was measured, and the markdown and PNG show the JSON's figures. (The other backends' children: make test-full.)"""
    from mteb_vllm.checkpoint import model_shape

    config = BenchConfig(model=minilm_path, model_name="sentence-transformers/all-MiniLM-L6-v2",
                         backends=["vllm"], dtypes=["float32"], batch_sizes=[4, 16], input_len=32,
                         variable_length=True, n=32, output_folder=str(tmp_path))
    run_bench(config, progress=False)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["skipped"] == [] and data["failed"] == []  # float32 is never emulated; a crash is a failure
    points = {(p["backend"], p["batch_size"], p["workload"]): p for p in data["points"]}
    assert set(points) == {(b, bs, w) for b in config.backends for bs in config.batch_sizes
                           for w in ("fixed-32", "variable")}
    shape, peak = model_shape(minilm_path), data["matmul_peak_gflops"]["float32"]
    lengths = {"fixed-32": [32] * 32, "variable": _token_lengths(minilm_path, "variable", 32)}
    markdown = (tmp_path / "bench.md").read_text()
    for (backend, batch_size, workload), p in points.items():
        lens = lengths[workload]
        assert (p["dtype"], p["computed_dtype"], p["emulated"]) == ("float32", "float32", False)
        assert p["requests"] == 32 and p["tokens"] == sum(lens) and p["seconds"] > 0
        assert p["tokens_per_s"] == pytest.approx(p["tokens"] / p["seconds"])
        assert p["requests_per_s"] == pytest.approx(32 / p["seconds"])
        gflops = sum(shape.forward_flops(n) for n in lens) / p["seconds"] / 1e9
        assert p["model_gflops_per_s"] == pytest.approx(gflops)
        assert p["peak_fraction"] == pytest.approx(gflops / peak)
        assert (f"| {backend} | float32 | {workload} | {batch_size} | {p['tokens_per_s']:,.0f} | "
                f"{p['requests_per_s']:.1f} | {p['latency_ms_p50']:.1f} | {p['model_gflops_per_s']:.1f} | "
                f"{100 * p['peak_fraction']:.0f} % |") in markdown
    png = (tmp_path / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(png) < 500_000
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "bench.png").ndim == 3


def _token_lengths(model, workload, n):
    """Tokens per text as the engine reads them (cut at the model's context)."""
    from transformers import AutoTokenizer

    from mteb_vllm.checkpoint import model_context_length

    cut = model_context_length(model)
    return [min(len(ids), cut) for ids in AutoTokenizer.from_pretrained(model)(workload_texts(workload, n))["input_ids"]]


@pytest.mark.engine
@pytest.mark.full
def test_bench_every_backend_and_precision(minilm_path, tmp_path):
    """The same harness as above over every backend (sentence-transformers, mteb's own vLLM wrapper) and bfloat16."""
    config = BenchConfig(model=minilm_path, model_name="sentence-transformers/all-MiniLM-L6-v2",
                         backends=["vllm", "st", "mteb-builtin"], dtypes=["float32", "bfloat16"],
                         batch_sizes=[4, 16], input_len=32, n=32, output_folder=str(tmp_path))
    run_bench(config, progress=False)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["failed"] == []
    skipped = {(s["backend"], s["dtype"]) for s in data["skipped"]}
    assert all("emulated" in s["reason"] for s in data["skipped"])  # only a precision the CPU lacks is skipped
    assert not {(b, "float32") for b in config.backends} & skipped
    measured = {(p["backend"], p["dtype"], p["batch_size"]) for p in data["points"]}
    assert measured == {(b, d, bs) for b in config.backends for d in config.dtypes for bs in config.batch_sizes
                        if (b, d) not in skipped}


def test_bad_configuration_is_refused_before_running(tmp_path, capsys):
    with pytest.raises(UsageError, match="unknown backend"):
        BenchConfig(model="x", backends=["onnx"])
    with pytest.raises(ValueError, match="at least the largest batch size"):  # UsageError is a ValueError
        BenchConfig(model="x", batch_sizes=[64], n=8)
    from mteb_vllm.cli import main

    # red-team C16: a usage error exits with 2 (it was 1), as the README says
    assert main(["bench", "--batch-sizes", "0", "--output-folder", str(tmp_path)]) == 2
    assert "batch sizes must be positive integers" in capsys.readouterr().err


def _checkpoint_with_its_own_code(minilm_path, folder):
    """MiniLM's files, whose config.json's auto_map points to code that leaves a mark when it runs."""
    folder.mkdir()
    for name in os.listdir(minilm_path):
        source = os.path.join(minilm_path, name)
        if name == "model.safetensors":
            os.symlink(source, folder / name)
        elif os.path.isdir(source):
            shutil.copytree(source, folder / name)
        else:
            shutil.copy(source, folder / name)
    marker = folder.parent / "RAN"
    (folder / "configuration_marked.py").write_text(
        "import os\nfrom transformers import BertConfig\n"
        f"open({str(marker)!r}, 'a').write(f'ran in {{os.getpid()}}\\n')\n"
        "class MarkedConfig(BertConfig):\n    model_type = 'marked-bert'\n")
    config = json.loads((folder / "config.json").read_text())
    # a model type transformers does not know: only the checkpoint's own code can load it
    config["auto_map"] = {"AutoConfig": "configuration_marked.MarkedConfig"}
    config["model_type"] = "marked-bert"
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_no_trust_remote_code_holds_for_every_row(minilm_path, tmp_path, monkeypatch, capsys):
    """Red-team N60: `bench --no-trust-remote-code` dropped the flag, and mteb's built-in wrapper (which defaults
    to trust_remote_code=True) ran the checkpoint's code. The decision is now made once, before any row loads
    anything: refused here, for every row, with exit code 2 and nothing run."""
    import mteb_vllm.bench as bench
    from mteb_vllm.cli import main

    checkpoint, marker = _checkpoint_with_its_own_code(minilm_path, tmp_path / "marked")
    spawned = []
    monkeypatch.setattr(bench, "_spawn", lambda spec: spawned.append(spec) or (None, "must not run"))
    code = main(["bench", "--model", str(checkpoint), "--no-trust-remote-code", "--n", "8", "--batch-sizes", "8",
                 "--dtypes", "float32", "--output-folder", str(tmp_path / "out")])
    assert code == 2 and "ships its own modelling code" in capsys.readouterr().err
    with pytest.raises(RemoteCodeError):  # the default (None) refuses an unknown model's code too
        run_bench(BenchConfig(model=str(checkpoint), n=8, batch_sizes=[8], output_folder=str(tmp_path / "out")),
                  progress=False)
    assert spawned == [] and not marker.exists()


def test_every_row_loads_the_checkpoint_with_the_one_decision(minilm_path, tmp_path, monkeypatch):
    """What reaches each row's child, and what each loader hands its library (stand-ins record the calls)."""
    import mteb_vllm.bench as bench

    specs = []
    monkeypatch.setattr(bench, "_spawn", lambda spec: specs.append(spec) or
                        ({"start_s": 0.0, "points": [], "resolved_dtype": "float32"}, ""))
    for allowed in (True, False):
        run_bench(BenchConfig(model=minilm_path, backends=list(BACKENDS), dtypes=["float32"], batch_sizes=[8], n=8,
                              input_len=16, output_folder=str(tmp_path / "out"), trust_remote_code=allowed),
                  progress=False)
    assert [s["trust_remote_code"] for s in specs] == [True] * 3 + [False] * 3

    seen = {}

    def recorder(name):
        class Loaded:
            def __init__(self, *args, **kwargs):
                seen[name] = kwargs.get("trust_remote_code")

            def encode(self, *args, **kwargs):
                return None

            embed_texts = encode

        return Loaded

    monkeypatch.setattr("mteb_vllm.encoder.VllmEncoderWrapper", recorder("vllm"))
    monkeypatch.setattr("sentence_transformers.SentenceTransformer", recorder("st"))
    monkeypatch.setattr("mteb.models.vllm_wrapper.VllmEncoderWrapper", recorder("mteb-builtin"))
    for backend in BACKENDS:
        bench._load(backend, minilm_path, None, "float32", trust_remote_code=False)
    assert seen == {"vllm": False, "st": False, "mteb-builtin": False}
    monkeypatch.setattr(bench, "_load", lambda *args, **kwargs: seen.update(child=kwargs) or (None, lambda t: None))
    monkeypatch.setattr(bench, "_computed_dtype", lambda *args: "float32")
    bench.run_child({"backend": "mteb-builtin", "model": minilm_path, "dtype": "float32", "workloads": [],
                     "batch_sizes": [8], "n": 8, "trust_remote_code": True})
    assert seen["child"] == {"trust_remote_code": True}


def test_an_emulated_precision_gets_no_share_of_a_peak(minilm_path, tmp_path, monkeypatch):
    """mteb's built-in wrapper computes in float16 under "auto"; where the CPU emulates float16 its square
    matmul runs at under 1 GFLOP/s, and a share of that read as 4000 % in a real run. Such a row says
    "emulated" instead, and no peak is measured for it. (A stand-in child: this is the report's logic.)"""
    import mteb_vllm.bench as bench
    import mteb_vllm.flops as flops

    def child(spec):
        resolved = {"vllm": "bfloat16", "mteb-builtin": "float16"}[spec["backend"]]
        points = [{"workload": w, "batch_size": b, "latencies_s": [0.01] * (spec["n"] // b)}
                  for w in spec["workloads"] for b in spec["batch_sizes"]]
        return {"resolved_dtype": resolved, "start_s": 1.0, "points": points}, ""

    measured = []
    monkeypatch.setattr(bench, "_spawn", child)
    monkeypatch.setattr(bench, "_on_gpu", lambda: False)
    monkeypatch.setattr(flops, "matmul_peak_gflops", lambda dtype: measured.append(dtype) or 100.0)
    monkeypatch.setattr("mteb_vllm.precision.cpu_emulation_reason",
                        lambda dtype: "emulated here" if dtype == "float16" else None)
    config = BenchConfig(model=minilm_path, backends=["vllm", "mteb-builtin"], dtypes=["auto"], batch_sizes=[4],
                         input_len=16, n=8, output_folder=str(tmp_path))
    report = run_bench(config, progress=False)
    rows = {p["backend"]: p for p in report["points"]}
    assert rows["mteb-builtin"]["computed_dtype"] == "float16" and rows["mteb-builtin"]["emulated"]
    assert rows["mteb-builtin"]["peak_fraction"] is None
    assert rows["vllm"]["peak_fraction"] == pytest.approx(rows["vllm"]["model_gflops_per_s"] / 100.0)
    assert measured == ["bfloat16"]
    markdown = (tmp_path / "bench.md").read_text()
    assert "| mteb-builtin | defaults (float16) |" in markdown and "n/a (emulated) |" in markdown
