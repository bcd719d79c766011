"""Task-level parallelism on one machine: K worker processes, each with its own engine on its own device.

Why tasks and not batches: an MTEB run is dozens to hundreds of independent tasks, and an engine is most
efficient when it owns its device. So each worker starts one engine (GPU: ``tensor_parallel_size`` devices
each, pinned through ``CUDA_VISIBLE_DEVICES``; CPU: disjoint core sets) and takes the next task from a shared
queue, largest first, so the longest task never starts last. With ``endpoints`` a worker is only a driver
against the fleet and pins nothing. All workers write one results folder; a worker that dies loses only the
task it was on, which is reported, and the rerun (mteb's only-missing strategy) finishes it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .outcomes import TaskOutcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerPlan:
    """Where one worker runs: CPU cores to pin to, or a CUDA device, or nothing (a fleet driver)."""

    index: int
    cores: tuple[int, ...] | None = None
    cuda_device: str | None = None


def plan_workers(count: int, *, endpoints: list[str] | None = None, tensor_parallel_size: int = 1,
                 dtype: str = "auto") -> list[WorkerPlan]:
    """One plan per worker, checked against the machine before anything starts.

    GPUs (found through NVML, without initialising CUDA here; :mod:`mteb_vllm.gpu`): each worker gets
    ``tensor_parallel_size`` GPUs of its own, so ``count x tensor_parallel_size`` must not exceed the visible
    GPUs; under ``dtype="auto"`` they must also give one precision (:mod:`mteb_vllm.precision`), since every
    worker files its results where this process looks them up. Without GPUs: disjoint CPU core groups.
    """
    if not isinstance(count, int) or count < 1:
        raise UsageError(f"--workers must be a positive integer, got {count!r}")
    if endpoints:
        return [WorkerPlan(i) for i in range(count)]
    from .gpu import cuda_build, visible_gpus

    tp = max(1, int(tensor_parallel_size))
    facts = visible_gpus() if cuda_build() else None
    if facts is not None and facts.devices:
        return _gpu_plans(count, tp, facts, dtype)
    from .cpu_defaults import available_cores, core_groups

    cores = available_cores()
    if count * tp > len(cores):
        per = f"{tp} cores" if tp > 1 else "at least one CPU core"
        raise UsageError(f"--workers {count} needs {per} each, but this process may use "
                         f"{len(cores)}; use --workers {max(1, len(cores) // tp)} or fewer")
    return [WorkerPlan(i, cores=tuple(group)) for i, group in enumerate(core_groups(count, cores))]


def _gpu_plans(count: int, tp: int, facts: Any, dtype: str) -> list[WorkerPlan]:
    from .precision import canonical, gpu_precision

    devices = facts.devices
    if count * tp > len(devices):
        each = f"{tp} GPUs" if tp > 1 else "one GPU"
        raise UsageError(f"--workers {count} needs {each} each ({count * tp} in all), but {len(devices)} are "
                         f"visible; use --workers {max(1, len(devices) // tp)}"
                         + (" (or a smaller --tensor-parallel-size)" if tp > 1 else
                            " (or --tensor-parallel-size for one model over several GPUs)"))
    groups = [devices[i * tp:(i + 1) * tp] for i in range(count)]
    if canonical(dtype) == "auto":
        chosen = {gpu_precision("auto", group).dtype: group[0] for group in groups}
        if len(chosen) > 1:
            kinds = ", ".join(f"{d.describe()}: {p}" for p, d in chosen.items())
            raise UsageError(f"the workers' GPUs would compute in different precisions under --dtype auto ({kinds}); "
                             "one run's results must come from one precision. Pass --dtype float16 (or float32), "
                             "or pick GPUs of one kind with CUDA_VISIBLE_DEVICES")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = [e.strip() for e in visible.split(",")] if visible else None

    def name(device: Any) -> str:
        # a UUID names the device NVML measured whatever CUDA_DEVICE_ORDER says; else the parent's own entry
        if facts.source == "nvml" and device.uuid:
            return device.uuid
        return entries[device.index] if entries else str(device.index)

    return [WorkerPlan(i, cuda_device=",".join(name(d) for d in group)) for i, group in enumerate(groups)]


def _die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when its parent dies (a killed run leaves no worker spinning)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: the parent's own cleanup has to do
        return
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _apply_plan(plan: WorkerPlan) -> None:
    if plan.cuda_device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = plan.cuda_device
    if plan.cores:
        os.sched_setaffinity(0, set(plan.cores))
        import torch  # an in-process CPU engine computes on this process's torch threads

        torch.set_num_threads(len(plan.cores))


def _worker_main(plan: WorkerPlan, wrapper_kwargs: dict[str, Any], output_folder: str | None, overwrite: bool,
                 conn: Any, parent: int) -> None:
    """One worker: pin, build the wrapper once (its engine starts with the first task), then ask the parent for
    a task, evaluate it, report, ask again, until it gets None."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ.setdefault("MTEB_VLLM_NO_PROGRESS", "1")
    _apply_plan(plan)
    from .encoder import VllmEncoderWrapper
    from .evaluate import run_serial

    try:
        wrapper = VllmEncoderWrapper(lazy_start=True, **wrapper_kwargs)
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    with wrapper:
        conn.send(("ready", None))
        while True:
            try:
                task = conn.recv()
            except EOFError:  # the parent stopped handing out work (interrupted): nothing is half done here
                return
            if task is None:
                return
            outcomes = run_serial(wrapper, [task], output_folder=output_folder, overwrite=overwrite,
                                  show_progress_bar=False)
            conn.send(("done", asdict(outcomes[task.metadata.name])))


def run_parallel(tasks: list[Any], plans: list[WorkerPlan], wrapper_kwargs: dict[str, Any], *,
                 output_folder: str | Path | None, overwrite: bool = False,
                 on_task: Any = None) -> list[TaskOutcome]:
    """Evaluate ``tasks`` (already filtered to what is missing) on one worker process per plan.

    Each worker has its own pipe and asks for its next task (largest first) when it is free: no lock is shared
    between workers, so one that is killed cannot block the others. A worker that dies marks the task it was
    on as failed and the others go on; a worker that cannot even build its wrapper reports why.
    """
    import multiprocessing
    from multiprocessing.connection import wait

    from .tasks import order_by_cost

    ctx = multiprocessing.get_context("spawn")
    pending = order_by_cost(tasks)
    metrics = {t.metadata.name: t.metadata.main_score for t in tasks}
    conns, procs = {}, {}
    for plan in plans:
        parent_end, child_end = ctx.Pipe()
        procs[plan.index] = ctx.Process(target=_worker_main, name=f"mteb-vllm-worker-{plan.index}", daemon=True,
                                        args=(plan, wrapper_kwargs,
                                              None if output_folder is None else str(output_folder), overwrite,
                                              child_end,
                                              os.getpid()))
        procs[plan.index].start()
        child_end.close()
        conns[plan.index] = parent_end
    outcomes: dict[str, TaskOutcome] = {}
    current: dict[int, str | None] = {i: None for i in procs}
    errors: list[str] = []

    def record(outcome: TaskOutcome) -> None:
        outcomes[outcome.task] = outcome
        if on_task:
            on_task(outcome)

    def hand_out(index: int) -> None:
        task = pending.pop(0) if pending else None
        current[index] = task.metadata.name if task is not None else None
        try:
            conns[index].send(task)
        except (BrokenPipeError, OSError):  # died meanwhile; the EOF below handles it
            pass
        if task is None:
            conns.pop(index).close()

    finished = False
    try:
        while conns:
            for conn in wait(list(conns.values()), timeout=5.0):
                index = next(i for i, c in conns.items() if c is conn)
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    conns.pop(index).close()
                    procs[index].join(timeout=10)
                    name = current[index]
                    if name is not None:
                        logger.error("worker %d died (exit code %s) during %s; the other workers go on", index,
                                     procs[index].exitcode, name)
                        record(TaskOutcome(name, metrics[name], "failed", error=(
                            f"worker {index} exited with code {procs[index].exitcode} while evaluating it")))
                    continue
                if kind == "error":
                    errors.append(f"worker {index}: {payload}")
                    conns.pop(index).close()
                    continue
                if kind == "done":
                    record(TaskOutcome(**payload))
                hand_out(index)
        finished = True
    finally:
        # Interrupted (Ctrl-C in a Python caller, an on_task that raised): close the pipes, so a worker waiting
        # for its next task sees end-of-file and exits, and stop the busy ones at once instead of waiting on
        # each; their unfinished tasks are missing on a rerun.
        for conn in conns.values():
            conn.close()
        for proc in procs.values():
            proc.join(timeout=30 if finished else 2)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    if errors and not outcomes:
        from .errors import MtebVllmError

        raise MtebVllmError("; ".join(errors))
    for task in tasks:
        name = task.metadata.name
        if name not in outcomes:
            record(TaskOutcome(name, task.metadata.main_score, "failed",
                               error="; ".join(errors) or "no worker was left to evaluate it"))
    return [outcomes[t.metadata.name] for t in tasks]


if __name__ == "__main__":  # pragma: no cover - workers are started through multiprocessing
    sys.exit("mteb_vllm.workers is started by `mteb-vllm run --workers K`")
