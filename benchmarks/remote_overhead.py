"""What the HTTP path costs: one real ``vllm serve`` on 127.0.0.1 against the in-process engine, same texts.

Backends, each in a fresh process, interleaved rounds, medians:

- ``local``: ``VllmEncoderWrapper(path)`` with its defaults (the in-process engine);
- ``remote``: the same wrapper with ``endpoints=[url]``, where the child first starts ``vllm serve`` with the
  settings ``mteb-vllm serve`` plans for the model (the same dtype policy) and waits until it is healthy.

Both run on this machine's two cores, so the server's compute and the client's tokenizing, HTTP and decoding
compete as they would on one node. What is timed is the encode of the 2000 texts of ``encode_throughput.py``
(5-200 words) after a 32-text warm-up; server and engine starts are reported apart. Embeddings are compared
(max abs difference, remote vs local of the same round).

    .venv/bin/python benchmarks/remote_overhead.py [--n 2000] [--repeats 3]
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

NAME = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("local", "remote")


def _child(name: str, n: int, out: str) -> None:
    import json
    import tempfile

    from mteb_vllm import VllmEncoderWrapper, default_model_path
    from mteb_vllm.workloads import variable_texts

    path = default_model_path()
    texts = variable_texts(n)
    started = time.perf_counter()
    server = None
    extra = {}
    if name == "remote":
        from mteb_vllm.serve import plan_server, start_server, wait_healthy
        from mteb_vllm.testing.fake_server import free_port

        plan = plan_server(path, model_name=NAME, port=free_port())
        server = start_server(plan, log_path=os.path.join(tempfile.mkdtemp(), "vllm.log"))
        wait_healthy(plan.url, server, timeout=600)
        extra = {"endpoints": [plan.url], "dtype": plan.dtype}  # servers do not report their precision
    model = VllmEncoderWrapper(path, model_name=NAME, **extra)
    start = time.perf_counter() - started
    model.embed_texts(texts[:32])  # warm-up
    started = time.perf_counter()
    vectors = np.asarray(model.embed_texts(texts), dtype=np.float32)
    seconds = time.perf_counter() - started
    np.save(out + ".npy", vectors)
    with open(out + ".json", "w") as fh:
        json.dump({"seconds": seconds, "start_s": start, "dtype": model.dtype}, fh)
    if server is not None:
        from mteb_vllm.serve import stop_server

        stop_server(server)
    sys.stdout.flush()
    os._exit(0)


def main() -> None:
    from harness import benchmark_parser, parse_benchmark_args

    parser = benchmark_parser("remote_overhead.json")
    parser.add_argument("--n", type=int, default=2000)
    args = parse_benchmark_args(parser)
    if args.child:
        _child(args.child, args.n, args.out)
        return
    import logging

    from harness import medians, run_rounds, write_json

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = run_rounds(__file__, list(BACKENDS), ["--n", str(args.n)], repeats=args.repeats)
    results = {name: {"dtype": done[0].timing["dtype"], **medians(done, ("seconds", "start_s")),
                      "runs": [r.timing for r in done]} for name, done in runs.items()}
    local, remote = results["local"], results["remote"]
    diff = max(float(np.abs(r.output - l.output).max()) for r, l in zip(runs["remote"], runs["local"]))
    summary = {"overhead": remote["seconds"]["median"] / local["seconds"]["median"] - 1,
               "max_abs_diff": diff}
    write_json(args.json, {"workload": {"texts": args.n, "words": "5-200"}, "repeats": args.repeats,
                           "results": results, "summary": summary})
    for name, row in results.items():
        print(f"{name:7s} {row['dtype']:9s} {row['seconds']['median']:6.1f} s "
              f"({row['seconds']['min']:.1f}-{row['seconds']['max']:.1f})  start {row['start_s']['median']:.1f} s")
    print(summary)


if __name__ == "__main__":
    main()
