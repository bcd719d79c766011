"""scripts/model_support.py: README's model-support table lists every setup of the parity suite and nothing else,
and is only ever a rendering of measured outcomes."""

import importlib.util
import sys
from pathlib import Path

import pytest
from model_zoo import SETUPS
from registry_zoo import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "model_support.py"


def _script():
    spec = importlib.util.spec_from_file_location("model_support", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["model_support"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["model_support"]
    return module


def test_the_readme_table_lists_every_setup_and_no_other():
    script = _script()
    text = (ROOT / "README.md").read_text()
    assert text.count(script.START) == 1 and text.count(script.END) == 1
    setups, names = script.table_ids(text)
    if not setups and "Not generated yet" in text.split(script.START)[1].split(script.END)[0]:
        pytest.skip("README's model-support table is not generated yet: run python scripts/model_support.py")
    assert sorted(setups) == sorted(s.id for s in SETUPS)
    assert sorted(names) == sorted(m.name for m in REGISTRY)


def test_the_table_is_rendered_from_outcomes_only():
    script = _script()
    first, second, refused = SETUPS[0], SETUPS[1], next(s for s in SETUPS if s.expected == "refused")
    outcomes = {"setups": {
        first.id: {"result": "exact", "max_one_minus_cos": 2e-12, "max_norm_error": 1e-7, "sts_delta": 0.0},
        second.id: {"result": "differs", "reason": "max_one_minus_cos 0.03 > 1e-05"},
        refused.id: {"result": "refused", "reason": "MPNet | no vLLM model"}}}
    body = script.render(outcomes, {"date": "2026-12-06"})
    setups, names = script.table_ids(f"{script.START}\n{body}\n{script.END}")
    assert setups == [s.id for s in SETUPS] and names == [m.name for m in REGISTRY]
    rows = {line.split("|")[1].strip().strip("`"): line for line in body.splitlines() if line.startswith("| `")}
    assert "exact (1−cos ≤ 2.0e-12, norm ≤ 1.0e-07, STS Δ 0)" in rows[first.id]
    assert "**differs**: max_one_minus_cos 0.03" in rows[second.id]
    assert "refused: MPNet \\| no vLLM model" in rows[refused.id]  # a | in a reason cannot break the table
    assert rows[SETUPS[3].id].rstrip().endswith("| not measured |")  # no outcome, no result
    bad = script.unexpected(outcomes)
    assert f"{second.id}: expected exact, got differs" in bad
    assert f"{SETUPS[3].id}: expected exact, got not measured" in bad
    assert not any(b.startswith(f"{first.id}:") or b.startswith(f"{refused.id}:") for b in bad)


def test_only_the_marked_section_is_rewritten():
    script = _script()
    text = f"intro\n{script.START}\nold\n{script.END}\noutro\n"
    assert script.replace_section(text, "new") == f"intro\n{script.START}\nnew\n{script.END}\noutro\n"
    with pytest.raises(SystemExit):
        script.replace_section("no markers", "new")
