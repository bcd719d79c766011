"""How the remote backend scales with the number of endpoints, on a simulated fleet.

Each endpoint is a fake vLLM server (``mteb_vllm.testing.fake_server``, its own process) with a fixed capacity:
one request at a time, ``--seconds-per-token`` per token, computing nothing (it sleeps, so 32 servers do not
compete for this machine's 2 cores, and what is measured is the client). The client is ``RemoteBackend`` with its
defaults, given pre-tokenized inputs (``--tokens`` each); the work grows with the fleet (``--requests`` per
endpoint) so every point runs for a few seconds. Efficiency is throughput / (N x one endpoint's throughput). The CPU time of the client and of the servers is
recorded too: on a 2-core machine they share the cores, and that, not the simulated compute, is what limits the
largest fleets.

    .venv/bin/python benchmarks/fleet_scaling.py [--endpoints 1 2 4 8 16 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import psutil


def measure(n: int, args: argparse.Namespace) -> dict[str, float]:
    from contextlib import ExitStack

    from mteb_vllm.backends.protocol import TokenizedInput
    from mteb_vllm.backends.remote import RemoteBackend, RemoteOptions
    from mteb_vllm.config import EngineConfig
    from mteb_vllm.testing.fake_server import FakeServer, FakeServerConfig

    config = FakeServerConfig(model="fleet-model", max_model_len=512, capacity=1, compute=False,
                              seconds_per_token=args.seconds_per_token)
    options = RemoteOptions()
    per_request = options.batch_tokens // args.tokens
    inputs = [TokenizedInput([101] + [2000 + (i % 500)] * (args.tokens - 2) + [102])
              for i in range(n * args.requests * per_request)]
    with ExitStack() as stack:
        servers = [FakeServer(config) for _ in range(n)]
        urls = [stack.enter_context(server) for server in servers]
        backend = RemoteBackend(EngineConfig(model="fleet-model", max_model_len=512, convert="embed"),
                                endpoints=urls, options=options)
        backend.pool(inputs[:per_request], "embed")  # connections and first requests out of the way
        procs = [psutil.Process(server.proc.pid) for server in servers]
        servers_cpu = sum(sum(p.cpu_times()[:2]) for p in procs)
        started, client_cpu = time.perf_counter(), time.process_time()
        out = backend.pool(inputs, "embed")
        seconds, client_cpu = time.perf_counter() - started, time.process_time() - client_cpu
        servers_cpu = sum(sum(p.cpu_times()[:2]) for p in procs) - servers_cpu
    assert out.shape[0] == len(inputs)
    tokens = len(inputs) * args.tokens
    # Where the cores went: the client (this process: request building, JSON, base64 decoding, the event loop)
    # and the fake servers' own request handling, both on this machine's cores; the ideal time is the servers'
    # simulated compute alone.
    ideal = args.requests * per_request * args.tokens * args.seconds_per_token
    return {"endpoints": n, "seconds": seconds, "ideal_s": ideal, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "requests": backend.requests_sent, "client_cpu_s": client_cpu, "servers_cpu_s": servers_cpu,
            "client_cpu_ms_per_request": 1e3 * client_cpu / backend.requests_sent,
            "cores_busy": (client_cpu + servers_cpu) / seconds}


def main() -> None:
    from harness import benchmark_parser, parse_benchmark_args

    parser = benchmark_parser("fleet_scaling.json", children=False)
    parser.add_argument("--endpoints", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--tokens", type=int, default=32, help="tokens per input")
    parser.add_argument("--requests", type=int, default=12, help="requests per endpoint per point")
    parser.add_argument("--seconds-per-token", type=float, default=2e-5, help="simulated server compute")
    args = parse_benchmark_args(parser)
    from harness import write_json

    rounds = {n: [] for n in args.endpoints}
    for _ in range(args.repeats):  # interleaved: each round measures every fleet size once
        for n in args.endpoints:
            rounds[n].append(measure(n, args))
            print(rounds[n][-1], flush=True)
    points = []
    for n, runs in rounds.items():
        rates = [r["tokens_per_s"] for r in runs]
        points.append({"endpoints": n, "tokens_per_s": float(np.median(rates)), "min": min(rates), "max": max(rates),
                       "requests": runs[0]["requests"], "tokens": runs[0]["tokens"],
                       **{k: float(np.median([r[k] for r in runs])) for k in
                          ("seconds", "ideal_s", "client_cpu_s", "servers_cpu_s", "client_cpu_ms_per_request",
                           "cores_busy")}})
    base = points[0]["tokens_per_s"] / points[0]["endpoints"]
    for p in points:
        p["speedup"] = p["tokens_per_s"] / points[0]["tokens_per_s"]
        p["efficiency"] = p["tokens_per_s"] / (p["endpoints"] * base)
    write_json(args.json, {"setup": {"tokens_per_input": args.tokens, "seconds_per_token": args.seconds_per_token,
                                     "server_capacity": 1, "requests_per_endpoint": args.requests,
                                     "one_endpoint_ceiling_tokens_per_s": 1 / args.seconds_per_token},
                           "repeats": args.repeats, "points": points})
    for p in points:
        print(f"{p['endpoints']:3d} endpoints  {p['tokens_per_s']:12,.0f} tokens/s  x{p['speedup']:.2f}  "
              f"efficiency {p['efficiency']:.2f}  client CPU {p['client_cpu_s']:.2f} s, servers CPU "
              f"{p['servers_cpu_s']:.2f} s, {p['cores_busy']:.2f} of {os.cpu_count()} cores busy")


if __name__ == "__main__":
    main()
