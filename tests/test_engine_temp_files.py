"""D10: vLLM's rendezvous file ``$TMPDIR/vllm_dist_<uuid>`` does not outlive an interrupted or killed run.

vLLM creates it at every engine start (``get_file_store_init_method``) and deletes it only on an orderly
shutdown; the local backend names it and hands it to the reaper sidecar, which removes it when this process
dies without closing the engine (SIGKILL, or the CLI's exit on SIGINT/SIGTERM).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mteb_vllm import reaper

_SIDE_CAR_ONLY = """
import os, sys, time
from mteb_vllm.reaper import Reaper
reaper = Reaper()
reaper.watch([], files=[sys.argv[1]])
print("ready", flush=True)
time.sleep(600)
"""

_DURING_START = """
import pathlib, sys, time
from mteb_vllm.reaper import Reaper
folder = pathlib.Path(sys.argv[1])
reaper = Reaper(new_files=str(folder / "vllm_dist_*"))
time.sleep(1.0)  # the sidecar notes what is there before the start
for name in sys.argv[2:]:
    (folder / name).write_bytes(b"x")
print("ready", reaper.pid, flush=True)
time.sleep(600)
"""

_ENGINE = """
import glob, os, sys, tempfile
from mteb_vllm import VllmEncoderWrapper, default_model_path
wrapper = VllmEncoderWrapper(default_model_path(), dtype="float32")
wrapper.embed_texts(["a sentence"])
print("ready", sorted(glob.glob(os.path.join(tempfile.gettempdir(), "vllm_dist_*"))), flush=True)
import time; time.sleep(600)
"""


def _start(code: str, *args: str, tmpdir: Path) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmpdir), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)


def _gone_within(paths: list[Path], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(p.exists() for p in paths):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_the_reaper_removes_the_files_it_was_handed_when_its_parent_is_killed(tmp_path):
    litter = tmp_path / "vllm_dist_0123"
    litter.write_bytes(b"x" * 2400)
    proc = _start(_SIDE_CAR_ONLY, str(litter), tmpdir=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert litter.exists()  # nothing happens while the parent lives
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert _gone_within([litter], 5.0)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("created, removed", [(["vllm_dist_new"], ["vllm_dist_new"]),
                                              (["vllm_dist_a", "vllm_dist_b"], [])])
def test_a_kill_during_the_start_removes_the_one_new_rendezvous_file(tmp_path, created, removed):
    """Killed before the engine named its file (Ctrl-C during the start): the one file that appeared since the
    start began is removed; an older one, or two new ones (another process started an engine too), stay."""
    older = tmp_path / "vllm_dist_older"
    older.write_bytes(b"x")
    proc = _start(_DURING_START, str(tmp_path), *created, tmpdir=tmp_path)
    try:
        word, sidecar = proc.stdout.readline().split()
        assert word == "ready"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert _gone_within([tmp_path / n for n in removed], 10.0)
        deadline = time.monotonic() + 10
        while reaper._alive(int(sidecar)) and time.monotonic() < deadline:  # done: what it left stays
            time.sleep(0.05)
        assert older.exists() and all((tmp_path / n).exists() for n in created if n not in removed)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.engine
@pytest.mark.slow
def test_kill_9_of_an_in_process_engine_leaves_no_rendezvous_file(tmp_path):
    proc = _start(_ENGINE, tmpdir=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready"), line
        files = list(tmp_path.glob("vllm_dist_*"))
        assert files, "vLLM created no rendezvous file: the premise of this test is gone"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert _gone_within(files, 5.0), [p.name for p in files if p.exists()]
    finally:
        proc.kill()
        proc.wait()
