"""`mteb-vllm serve`: the `vllm serve` command carries the local engine's settings, and vLLM accepts it."""

from __future__ import annotations

import json

import pytest

from mteb_vllm.serve import plan_server

pytestmark = pytest.mark.slow  # imports vLLM (its argument parser)


def _parsed(command: list[str]):
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    if "--model" in command:  # python -m vllm.entrypoints.openai.api_server --model M ...
        start = command.index("--model")
        model, rest = command[start + 1], command[start + 2:]
    else:  # vllm serve M ...
        start = command.index("serve")
        model, rest = command[start + 1], command[start + 2:]
    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    return parser.parse_args(["--model", model, *rest])


def test_an_embedding_server_runs_the_model_as_the_local_engine_does(minilm_path):
    from mteb_vllm.precision import engine_runs_on_cpu, resolve_dtype

    plan = plan_server(minilm_path, port=8123)
    ns = _parsed(plan.command)
    assert (ns.runner, ns.convert, ns.max_model_len) == ("pooling", "embed", 256)
    assert ns.dtype == plan.dtype == resolve_dtype("auto", on_cpu=engine_runs_on_cpu()).dtype  # never "auto"
    assert ns.served_model_name == [minilm_path] and ns.port == 8123 and ns.host == "127.0.0.1"
    if engine_runs_on_cpu():
        assert ns.block_size == 32 and ns.enforce_eager and "VLLM_CPU_OMP_THREADS_BIND" in plan.env
    assert plan.shell().startswith("VLLM_CPU_OMP_THREADS_BIND=") or not engine_runs_on_cpu()


def test_an_llm_reranker_server_gets_the_templates_score_head(qwen3_reranker_path):
    from mteb_vllm.templates import QWEN3_RERANKER

    plan = plan_server(qwen3_reranker_path, task="classify", template=QWEN3_RERANKER, dtype="float32",
                       extra_args=["--max-num-seqs", "8"])
    ns = _parsed(plan.command)
    assert ns.convert == "classify" and ns.dtype == "float32"
    overrides = ns.hf_overrides if isinstance(ns.hf_overrides, dict) else json.loads(ns.hf_overrides)
    assert overrides == {"classifier_from_token": ["no", "yes"], "method": "from_2_way_softmax"}
    assert ns.max_model_len == 1024  # the tiny model's own context (the template allows 8192)
    assert ns.max_num_seqs == 8  # extra arguments come last and win


def test_the_cli_prints_the_command_and_the_client_line(minilm_path, capsys):
    from mteb_vllm.cli import main

    assert main(["serve", minilm_path, "--dry-run", "--port", "8124", "--dtype", "float32", "-dp", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "--data-parallel-size" not in out[0] and out[0].endswith("-dp 2")
    assert out[1].startswith(f"# clients: mteb-vllm run --model {minilm_path} --endpoint http://127.0.0.1:8124"
                             " --dtype float32")
