"""Engine processes never outlive the process that started them.

Why: in vLLM's multiprocess mode (chosen on CPU for tensor parallelism or when a module breaks the in-process
start, and on GPUs) the engine core and its workers are separate processes holding gigabytes. When the
process that started them is killed with SIGKILL, nothing tells them: they were seen spinning for an hour,
reparented to PID 1, with 1.5 GB each. vLLM's engine core does not watch its parent.

A :class:`Reaper` is a tiny sidecar process (the standard library and psutil, so it starts in milliseconds)
that holds the read end of a pipe whose write end only the parent has. When the parent exits in any way, the
pipe reaches end-of-file; unless the parent said "done" first (an orderly shutdown, which stops the engine
itself), the reaper terminates the engine processes it was told about (SIGTERM, then SIGKILL after a grace
period), removes the folder of vLLM's IPC socket files and the temp files it was told about (the
``$TMPDIR/vllm_dist_<uuid>`` rendezvous file vLLM deletes only on an orderly shutdown).

    python -m mteb_vllm.reaper PARENT_PID [IPC_DIR]
    (started by Reaper; reads "pid N", "file PATH", "newfiles GLOB", "started" and "done" lines)
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil

logger = logging.getLogger(__name__)

GRACE_SECONDS = 3.0

#: PIDs of the sidecars this process started and has not released (they must outlive a crash of this process).
SIDECARS: set[int] = set()


class Reaper:
    """Start the sidecar right before the engine starts; :meth:`watch` hands it the engine's PIDs once it is up
    (until then the sidecar notes every new child of this process itself); :meth:`release` after a clean close."""

    def __init__(self, ipc_dir: str | None = None, *, new_files: str | None = None):
        """``new_files``: a glob; if this process dies before :meth:`watch`, the one file matching it that
        appeared since now is removed (none when several did: another process's start created them)."""
        self.ipc_dir = ipc_dir
        args = [sys.executable, "-m", "mteb_vllm.reaper", str(os.getpid())] + ([ipc_dir] if ipc_dir else [])
        # Its own session: a Ctrl-C sent to the terminal's process group must not kill it before the engine.
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True, text=True, close_fds=True)
        SIDECARS.add(self._proc.pid)
        if new_files and "\n" not in new_files and self._proc.stdin is not None:
            try:
                self._proc.stdin.write(f"newfiles {new_files}\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                logger.debug("reaper sidecar not reachable", exc_info=True)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def watch(self, pids: list[int], files: list[str] | tuple[str, ...] = ()) -> None:
        """Processes to terminate, and files to remove, if this process dies before :meth:`release`."""
        if self._proc.stdin is None or self._proc.stdin.closed:
            return
        try:
            for pid in pids:
                self._proc.stdin.write(f"pid {pid}\n")
            for path in files:
                if "\n" not in path:
                    self._proc.stdin.write(f"file {path}\n")
            self._proc.stdin.write("started\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):  # the sidecar is gone; nothing to hand over
            logger.debug("reaper sidecar not reachable", exc_info=True)

    def release(self) -> None:
        """The engine was shut down in order: the sidecar exits without killing anything."""
        try:
            if self._proc.stdin is not None and not self._proc.stdin.closed:
                self._proc.stdin.write("done\n")
                self._proc.stdin.close()
            self._proc.wait(timeout=10)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            self._proc.kill()
        SIDECARS.discard(self._proc.pid)
        if self.ipc_dir:
            shutil.rmtree(self.ipc_dir, ignore_errors=True)


def engine_child_pids(before: set[int]) -> list[int]:
    """This process's descendants that were not there in ``before`` (the engine's processes)."""
    return [p.pid for p in psutil.Process().children(recursive=True) if p.pid not in before]


def current_child_pids() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs. A zombie (it has exited and waits for its parent to collect it) counts as gone.

    Why not ``os.kill(pid, 0)``: it succeeds on zombies. Engine processes killed here stay zombies until
    their parent collects them, and orphans reparented to PID 1 can wait seconds for that (a container's init
    collects them when it gets round to it), so a zombie-blind check sat out the whole SIGTERM grace period and
    then the SIGKILL one: about 6 s of a killed CLI (or of this sidecar) spent waiting on processes already dead.
    """
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:  # gone (a zombie psutil cannot read is one too)
        return False
    except psutil.AccessDenied:  # another user's process: it exists
        return True


def terminate(pids: list[int]) -> None:
    """SIGTERM, a grace period, then SIGKILL for whatever is still alive."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
        if not any(_alive(p) for p in pids):
            return


def _descendants(root: int) -> set[int]:
    """Every live descendant of ``root``; empty when ``root`` is gone."""
    try:
        return {p.pid for p in psutil.Process(root).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _main(argv: list[str]) -> int:
    """Watch the parent: while its engine starts, note every process it gains (a kill during the start must not
    orphan half an engine); afterwards keep the PIDs it reports; at end-of-pipe without "done", reap them."""
    import threading

    parent = int(argv[0])
    ipc_dir = argv[1] if len(argv) > 1 else None
    before = _descendants(parent) | {os.getpid()}
    pids: set[int] = set()
    files: list[str] = []
    new_files: dict[str, set[str]] = {}  # glob -> matches when it was handed over
    state = {"started": False, "released": False, "eof": False}

    def read() -> None:
        for line in sys.stdin:  # ends when the parent is gone (or closed its end after "done")
            words = line.split()
            if words[:1] == ["pid"] and len(words) == 2 and words[1].isdigit():
                pids.add(int(words[1]))
            elif line.startswith("file ") and len(line) > 6:
                files.append(line[5:].rstrip("\n"))
            elif line.startswith("newfiles ") and len(line) > 10:
                pattern = line[9:].rstrip("\n")
                new_files[pattern] = set(glob.glob(pattern))
            elif words[:1] == ["started"]:
                state["started"] = True
            elif words[:1] == ["done"]:
                state["released"] = True
                break
        state["eof"] = True

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while not state["eof"]:
        if not state["started"]:
            pids.update(_descendants(parent) - before)
        reader.join(0.2)
    if not state["released"]:
        terminate(sorted(pids))
        if ipc_dir:
            shutil.rmtree(ipc_dir, ignore_errors=True)
        if not state["started"]:  # killed during the start: the file it was about to name is the one new one
            for pattern, before in new_files.items():
                appeared = set(glob.glob(pattern)) - before
                if len(appeared) == 1:
                    files.extend(appeared)
        for path in files:
            try:
                os.unlink(path)
            except OSError:  # already gone (vLLM removed it), or not ours to remove
                pass
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the parent's end-of-pipe ends the watch
    sys.exit(_main(sys.argv[1:]))
