"""benchmarks/make_report.py: BENCHMARKS.md names the machine of every figure, and an earlier machine's
results keep their own report instead of being dropped or mixed into the latest machine's tables."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "make_report.py"


def _make_report():
    spec = importlib.util.spec_from_file_location("make_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_report"] = module  # its dataclass resolves annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["make_report"]
    return module


def _machine(cpu: str) -> dict:
    return {"cpu": cpu, "cores": 2, "ram_gib": 23.5, "platform": "Linux", "python": "3.11.7"}


def _e2e(cpu: str, st_s: float, ours_s: float) -> dict:
    def row(label, dtype, total, ratio):
        stat = {"median": total, "min": total, "max": total}
        return {"label": label, "dtype": dtype, "total_s": stat, "load_s": stat, "evaluate_s": stat,
                "ratio_vs_st": ratio, "max_score_delta_vs_st": 0.0}

    return {"machine": _machine(cpu), "versions": {"mteb": "x"}, "repeats": 3,
            "workload": {"tasks": [["T", 10, 1]], "sentences": 20, "unique": 18, "mean_words": 9.0,
                         "mean_tokens": 12.0},
            "results": {"st": row("reference", "float32", st_s, 1.0),
                        "ours": row("defaults", "bfloat16", ours_s, st_s / ours_s)}}


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "benchmarks" / "results"
    (folder / "older-box").mkdir(parents=True)
    (folder / "e2e_defaults.json").write_text(json.dumps(_e2e("New CPU", 90.0, 36.0)))
    (folder / "older-box" / "e2e_defaults.json").write_text(json.dumps(_e2e("Old CPU", 47.2, 18.2)))
    return folder


def test_each_machine_keeps_its_figures(results, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    text = _make_report().write_reports(results, out)
    assert out.read_text() == text
    table = text[text.index("## The headline figures on each machine"):text.index("## This machine")]
    assert "New CPU, 2 cores (latest)" in table and "Old CPU, 2 cores (older-box)" in table
    assert "2.50x (90.0 s vs 36.0 s, bfloat16)" in table and "2.59x (47.2 s vs 18.2 s, bfloat16)" in table
    assert table.index("New CPU") < table.index("Old CPU")  # the latest machine first
    # the latest machine's full tables are in BENCHMARKS.md; the older machine's are in its own REPORT.md
    latest = text[text.index("## This machine"):]
    assert "New CPU" in latest and "Old CPU" not in latest
    older = (results / "older-box" / "REPORT.md").read_text()
    assert "Old CPU" in older and "New CPU" not in older and "| reference | float32 | 47.2" in older


def test_one_machine_has_no_comparison_table(results, tmp_path):
    shutil.rmtree(results / "older-box")
    text = _make_report().write_reports(results, tmp_path / "BENCHMARKS.md")
    assert "## The headline figures on each machine" not in text
    assert "New CPU" in text
