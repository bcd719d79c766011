"""Throughput-vs-latency plots: x is throughput, y is latency per batch, both log scale, one curve per
backend and dtype, points labelled with their batch size. Down and to the right is better."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def throughput_latency_plot(report: dict[str, Any], path: str | Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'mteb-vllm[demo]' (or: pip install matplotlib)") from exc

    points = report["points"]
    workloads = list(dict.fromkeys(p["workload"] for p in points))
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.2 * len(workloads), 4.0), squeeze=False)
    for ax, workload in zip(axes[0], workloads):
        curves = dict.fromkeys((p["backend"], p["dtype"]) for p in points if p["workload"] == workload)
        for backend, dtype in curves:
            series = sorted((p for p in points if p["workload"] == workload and p["backend"] == backend
                             and p["dtype"] == dtype), key=lambda p: p["batch_size"])
            xs = [p["tokens_per_s"] for p in series]
            ys = [p["latency_ms_p50"] for p in series]
            ax.plot(xs, ys, marker="o", label=f"{backend} {dtype}")
            for p, x, y in zip(series, xs, ys):
                ax.annotate(str(p["batch_size"]), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("throughput (tokens/s)")
        ax.set_ylabel("latency per batch (ms, p50)")
        ax.set_title(workload, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    config = report["config"]
    name = config.get("model_name") or Path(config["model"]).name
    fig.suptitle(f"{name}: throughput vs latency, point labels are batch sizes", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=7, frameon=False)
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
