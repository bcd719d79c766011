"""The in-process engine's own behaviour: a context length it cannot run refused before the start (red-team B6),
Ctrl-C in the middle of an encode (N58), several threads starting and using engines at once (issue 18), and a
forked child (N57). Marker ``engine`` tests share the session's MiniLM engine where they can."""

from __future__ import annotations

import faulthandler
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from mteb_vllm import VllmEncoderWrapper
from mteb_vllm.errors import EngineArgumentError, UsageError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_a_context_length_above_the_models_is_refused_before_the_engine_starts(minilm_path, monkeypatch):
    """vLLM refused max_model_len=100000 only after loading the weights (15 s); MiniLM runs 256 tokens (its
    sentence-transformers max_seq_length, which vLLM reads too). Nothing starts here (lazy_start)."""
    with pytest.raises(EngineArgumentError, match=r"max_model_len=100000 is above the context length .*256 "
                                                  r"tokens.*VLLM_ALLOW_LONG_MAX_MODEL_LEN") as caught:
        VllmEncoderWrapper(minilm_path, model_name=MINILM, max_model_len=100_000, lazy_start=True)
    assert isinstance(caught.value, UsageError)  # the CLI exits with 2
    assert VllmEncoderWrapper(minilm_path, model_name=MINILM, max_model_len=256, lazy_start=True).backend.max_model_len == 256
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")  # vLLM's own opt-out is honoured
    assert VllmEncoderWrapper(minilm_path, model_name=MINILM, max_model_len=1000, lazy_start=True).backend.max_model_len == 1000


@pytest.mark.engine
def test_ctrl_c_during_an_encode_leaves_the_engine_usable(minilm_encoder):
    """Red-team N58: the KeyboardInterrupt a notebook's "interrupt kernel" raises lands inside vLLM's step; the
    requests it had scheduled stayed in the engine, and the next encode spun on them forever at 100 % CPU.

    The interrupt is raised by vLLM's own step, on its third call, with requests in flight: deterministic (a timer
    thread's ``_thread.interrupt_main`` landed after the encode had finished on a loaded machine)."""
    from mteb_vllm.backends.local import _is_idle

    probe = ["a probe sentence", "and another one, a little longer than the first"]
    expected = minilm_encoder.embed_texts(probe)
    llm = minilm_encoder.engine.llm
    engine = llm.llm_engine
    texts = [f"sentence number {i} " + "word " * (i % 100) for i in range(4000)]
    step, in_flight = engine.step, []

    def step_interrupted_on_its_third_call():
        if len(in_flight) == 2:
            in_flight.append(engine.has_unfinished_requests())
            raise KeyboardInterrupt
        in_flight.append(engine.has_unfinished_requests())
        return step()

    engine.step = step_interrupted_on_its_third_call
    try:
        with pytest.raises(KeyboardInterrupt):
            minilm_encoder.embed_texts(texts)
    finally:
        del engine.step  # the instance attribute goes; the class's step is back
    assert in_flight == [True, True, True]  # the interrupt came with requests scheduled
    assert _is_idle(llm)
    faulthandler.dump_traceback_later(180, exit=True)  # a deadline: without the fix this call never returned
    try:
        again = minilm_encoder.embed_texts(probe)
    finally:
        faulthandler.cancel_dump_traceback_later()
    np.testing.assert_array_equal(again, expected)


@pytest.mark.engine
def test_threads_starting_and_using_engines_at_once(minilm_path, minilm_encoder):
    """Two threads each start an engine and encode with it while a third (the main thread) sets a variable:
    every vector is what the session's engine computes, the variable survives the starts (a start snapshot and
    restored the whole environment), what the starts set is put back, and the live-engine list is exact."""
    from mteb_vllm.backends.local import LocalVllmBackend

    texts = {i: [f"thread {i} says text {j} " + "word " * (j % 30) for j in range(300)] for i in range(2)}
    expected = {i: minilm_encoder.embed_texts(t) for i, t in texts.items()}
    environ, live_before = dict(os.environ), set(LocalVllmBackend._live)
    go = threading.Barrier(3)
    results: dict[int, list[np.ndarray]] = {}
    live_inside: list[int] = []
    errors: list[BaseException] = []

    def start_and_encode(i: int) -> None:
        try:
            go.wait(timeout=60)
            with VllmEncoderWrapper(minilm_path, model_name=MINILM, dtype="float32") as wrapper:
                results[i] = [wrapper.embed_texts(texts[i]) for _ in range(3)]
                live_inside.append(len(LocalVllmBackend._live))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start_and_encode, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    go.wait(timeout=60)
    time.sleep(1.0)  # the first start is under way (it takes seconds)
    os.environ["MTEB_VLLM_T_USER"] = "set by the user while engines start"
    try:
        for t in threads:
            t.join(timeout=900)
        assert not errors, errors
        for i in range(2):
            for out in results[i]:
                np.testing.assert_allclose(out, expected[i], atol=1e-5)
        assert os.environ.get("MTEB_VLLM_T_USER") == "set by the user while engines start"
        assert {k: v for k, v in os.environ.items() if k != "MTEB_VLLM_T_USER"} == environ
        assert max(live_inside) <= len(live_before) + 2 and LocalVllmBackend._live == live_before
    finally:
        os.environ.pop("MTEB_VLLM_T_USER", None)


_FORK_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from mteb_vllm import VllmEncoderWrapper, default_model_path
    from mteb_vllm.errors import ForkedEngineError

    wrapper = VllmEncoderWrapper(default_model_path(), dtype="float32")
    expected = wrapper.embed_texts(["the parent's text"])

    def child(how):
        pid = os.fork()
        if pid:
            return os.waitpid(pid, 0)[1]
        signal.alarm(60)  # a hang shows as SIGALRM
        if how == "encode":
            try:
                wrapper.embed_texts(["the child's text"])
                os._exit(3)
            except ForkedEngineError as exc:
                os._exit(0 if "Create the wrapper in the child" in str(exc) else 4)
        if how == "close":
            wrapper.close()
            os._exit(0)
        sys.exit(0)  # an interpreter exit, with everything it finalizes

    for how in ("encode", "close", "exit"):
        status = child(how)
        print(how, "signal" if os.WIFSIGNALED(status) else "exit",
              os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status), flush=True)
        assert (wrapper.embed_texts(["the parent's text"]) == expected).all()
    wrapper.close()
    print("parent ok", flush=True)
""")


@pytest.mark.engine
@pytest.mark.slow
def test_a_forked_child_gets_a_clear_error_and_leaves_the_parents_engine_alone(tmp_path):
    """Red-team N57: after os.fork() the child's encode hung (torch's OpenMP threads do not survive a fork) and
    its close crashed. Now the child gets ForkedEngineError at once, its close and its interpreter exit do not
    crash (the exit did, SIGSEGV in torch's process-group destructor) nor touch the parent's engine."""
    script = tmp_path / "fork.py"
    script.write_text(_FORK_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line]
    assert lines == ["encode exit 0", "close exit 0", "exit exit 0", "parent ok"], done.stdout + done.stderr[-3000:]
