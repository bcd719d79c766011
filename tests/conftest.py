"""One real vLLM engine per model for the whole session (each start costs ~30 s on CPU).

Also the suite's house rules, enforced here so that test order never changes what a test exercises:

- ``@pytest.mark.bm25s``: the test imports bm25s, which loads numba/llvmlite; once that is loaded every later
  in-process engine start in this process silently runs multiprocess instead (``backends/local.py``,
  ``_IN_PROCESS_HAZARDS``). Such tests run after all others, and a test that loads llvmlite without the
  marker fails.
- ``@pytest.mark.full``: a heavier variant of a path another test already covers; ``make test-full`` (pytest
  ``--full``) runs it, ``make test`` skips it.
- ``borrow_engines``: in-process CLI runs reuse the session's engines instead of starting their own.
- ``--starts``: which tests started engines in this process or spawned child processes (the suite's cost).
"""

import os
import sys
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MTEB_VLLM_NO_PROGRESS", "1")
# The CLI caches embeddings by default in the user cache folder; tests (and the CLI runs they start) use their
# own, so a test run neither reads a user's entries nor leaves its own behind.
os.environ.setdefault("MTEB_VLLM_CACHE", tempfile.mkdtemp(prefix="mteb-vllm-test-cache-"))

#: What bm25s loads that flips in-process engine starts to multiprocess (kept in step with backends/local.py).
IN_PROCESS_HAZARD = "llvmlite.binding.ffi"


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", help="also run the heavier variants (@pytest.mark.full)")
    parser.addoption("--starts", action="store_true",
                     help="list the tests that started an engine in this process or spawned child processes")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--full"):
        skip = pytest.mark.skip(reason="a heavier variant of a covered path: make test-full runs it")
        for item in items:
            if item.get_closest_marker("full"):
                item.add_marker(skip)
    # bm25s tests last (stable order otherwise): every engine before them starts as a user's would
    late = [i for i in items if i.get_closest_marker("bm25s")]
    items[:] = [i for i in items if not i.get_closest_marker("bm25s")] + late


@pytest.fixture(autouse=True)
def _no_hidden_bm25s(request):
    """A test that loads llvmlite without saying so would change the code path of every later engine start."""
    loaded_before = IN_PROCESS_HAZARD in sys.modules
    yield
    if not loaded_before and IN_PROCESS_HAZARD in sys.modules and not request.node.get_closest_marker("bm25s"):
        pytest.fail(f"{request.node.nodeid} loaded {IN_PROCESS_HAZARD} (bm25s/numba): mark it "
                    "@pytest.mark.bm25s so it runs after the tests whose engines must start in-process")


# --- what each test costs: engine starts in this process, child processes ------------------------------------
class _Starts:
    def __init__(self):
        self.current = None
        self.by_test: dict[str, list[int]] = {}

    def add(self, index: int) -> None:
        if self.current is not None:
            self.by_test.setdefault(self.current, [0, 0])[index] += 1


_STARTS = _Starts()


def pytest_sessionstart(session):
    import multiprocessing.process
    import subprocess

    from mteb_vllm.backends.local import LocalVllmBackend

    start = LocalVllmBackend.start

    def counted_start(self):
        if not self.started:
            _STARTS.add(0)
        return start(self)

    popen_init = subprocess.Popen.__init__

    def counted_popen(self, *args, **kwargs):
        _STARTS.add(1)
        return popen_init(self, *args, **kwargs)

    process_start = multiprocessing.process.BaseProcess.start

    def counted_process(self):
        _STARTS.add(1)
        return process_start(self)

    LocalVllmBackend.start = counted_start
    subprocess.Popen.__init__ = counted_popen
    multiprocessing.process.BaseProcess.start = counted_process


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _STARTS.current = item.nodeid
    yield
    _STARTS.current = None


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker (make test-fast): its counts go to the controller
        workeroutput["starts"] = _STARTS.by_test


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist, on the controller: a worker's counts join the summary."""
    for nodeid, counts in getattr(node, "workeroutput", {}).get("starts", {}).items():
        _STARTS.by_test[nodeid] = list(counts)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = _STARTS.by_test
    engines, children = sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())
    terminalreporter.write_line(f"engine starts in the test process: {engines}; child processes spawned: {children} "
                                "(engines in child processes come on top; --starts lists the tests)")
    if config.getoption("--starts"):
        for nodeid, (e, c) in sorted(rows.items(), key=lambda kv: (-kv[1][0], -kv[1][1])):
            terminalreporter.write_line(f"  {e:2d} engine(s) {c:3d} process(es)  {nodeid}")


# --- the session's engines ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def minilm_path():
    from mteb_vllm import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def minilm_encoder(minilm_path):
    from mteb_vllm import VllmEncoderWrapper

    wrapper = VllmEncoderWrapper(minilm_path, model_name="sentence-transformers/all-MiniLM-L6-v2", dtype="float32")
    yield wrapper
    wrapper.close()


@pytest.fixture
def session_engine(minilm_encoder):
    """The session's MiniLM engine, which make test's other engine tests share, kept alive while the parity suite's
    engines come and go: with another engine up, closing one releases it without tearing down vLLM's process-wide
    state, about 1 s instead of 6 s here (the teardown runs four full garbage collections)."""
    return minilm_encoder


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def qwen3_embedding_path(tiny_dir, minilm_path):
    from tiny_models import qwen3_embedding_model

    return str(qwen3_embedding_model(tiny_dir / "qwen3-embedding", minilm_path))


@pytest.fixture(scope="session")
def bert_cross_encoder_path(tiny_dir, minilm_path):
    from tiny_models import bert_cross_encoder

    return str(bert_cross_encoder(tiny_dir / "bert-cross-encoder", minilm_path))


@pytest.fixture(scope="session")
def bert_two_label_path(tiny_dir, minilm_path):
    from tiny_models import bert_cross_encoder

    return str(bert_cross_encoder(tiny_dir / "bert-two-label", minilm_path, seed=3, num_labels=2))


@pytest.fixture(scope="session")
def qwen3_reranker_path(tiny_dir, minilm_path):
    from tiny_models import qwen3_reranker_model

    return str(qwen3_reranker_model(tiny_dir / "qwen3-reranker", minilm_path))


@pytest.fixture(scope="session")
def bert_reranker(bert_cross_encoder_path):
    from mteb_vllm import VllmCrossEncoderWrapper

    wrapper = VllmCrossEncoderWrapper(bert_cross_encoder_path, dtype="float32")
    yield wrapper
    wrapper.close()


@pytest.fixture(scope="session")
def qwen3_reranker(qwen3_reranker_path):
    from mteb_vllm import VllmCrossEncoderWrapper
    from mteb_vllm.templates import QWEN3_RERANKER

    wrapper = VllmCrossEncoderWrapper(qwen3_reranker_path, template=QWEN3_RERANKER, dtype="float32",
                                      max_model_len=512)
    yield wrapper
    wrapper.close()


class _Borrowed:
    """A session engine lent to a wrapper that believes it owns it: everything but ``close`` goes through."""

    def __init__(self, backend):
        self.__dict__["_backend"] = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def close(self) -> None:
        """The session fixture that started the engine closes it."""


@pytest.fixture
def borrow_engines(monkeypatch):
    """``borrow_engines(minilm_encoder, ...)``: until the test ends, a local engine asked for with the same
    configuration as one of these wrappers' (e.g. ``mteb-vllm run --dtype float32`` in-process) is that running
    engine instead of a new one; any other local engine fails the test instead of starting unnoticed."""
    from mteb_vllm.backends import BACKENDS

    def borrow(*wrappers):
        running = [(w.config, w.backend) for w in wrappers]

        def factory(config, **options):
            for wanted, backend in running:
                if wanted == config:
                    return _Borrowed(backend)
            raise AssertionError(f"no session engine has this configuration (the test would start another "
                                 f"engine): {config}\nsession engines: {[c for c, _ in running]}")

        monkeypatch.setitem(BACKENDS, "local", factory)

    return borrow
