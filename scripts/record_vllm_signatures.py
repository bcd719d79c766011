"""Record what mteb-vllm relies on in one vLLM release, read from its source without importing it.

    python scripts/record_vllm_signatures.py SRC_DIR [--wheel NAME] > tests/vllm_signatures/vllm-X.Y.Z.json

SRC_DIR holds the release's ``vllm/`` package and ``vllm-X.Y.Z.dist-info/`` (an unzipped wheel:
``pip download vllm==X.Y.Z --no-deps`` then ``unzip``). Why source and not an import: the GPU wheels do not
import on a machine without CUDA, and these facts are what the unit tests of tests/test_vllm_compat.py check
our code against for every release in the supported range, with no vLLM installed.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path


def _tree(root: Path, rel: str) -> ast.Module | None:
    path = root / rel
    return ast.parse(path.read_text()) if path.exists() else None


def _class(tree: ast.Module | None, name: str) -> ast.ClassDef | None:
    if tree is None:
        return None
    return next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name), None)


def _fields(cls: ast.ClassDef | None) -> dict[str, str]:
    """Annotated class attributes (dataclass / msgspec fields) and their annotations."""
    if cls is None:
        return {}
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def _params(fn: ast.FunctionDef | None) -> list[str]:
    if fn is None:
        return []
    a = fn.args
    return [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg != "self"]


def _method(tree: ast.Module | None, cls: str, name: str) -> ast.FunctionDef | None:
    node = _class(tree, cls)
    if node is None:
        return None
    return next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == name), None)


def _function(tree: ast.Module | None, name: str) -> ast.FunctionDef | None:
    if tree is None:
        return None
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)


def record(root: Path, wheel: str | None) -> dict:
    dist = next(root.glob("vllm-*.dist-info"))
    version = dist.name[len("vllm-"):-len(".dist-info")]
    metadata = (dist / "METADATA").read_text()
    requires_python = re.search(r"^Requires-Python: (.+)$", metadata, re.M)
    torch_pin = re.search(r"^Requires-Dist: torch(==[^;\s]+)", metadata, re.M)

    engine_args = _fields(_class(_tree(root, "vllm/engine/arg_utils.py"), "EngineArgs"))
    frontend = {}
    for rel in ("vllm/entrypoints/common/cli_args.py", "vllm/entrypoints/launchers/cli_args.py",
                "vllm/entrypoints/openai/cli_args.py"):
        tree = _tree(root, rel)
        for cls in ("BaseFrontendArgs", "FrontendArgs"):
            frontend.update(_fields(_class(tree, cls)))
    encode = None
    for rel, cls in (("vllm/entrypoints/pooling/offline.py", "PoolingOfflineMixin"), ("vllm/entrypoints/llm.py", "LLM")):
        encode = encode or _method(_tree(root, rel), cls, "encode")
    compress = _function(_tree(root, "vllm/entrypoints/pooling/scoring/utils.py"), "compress_token_type_ids")
    runners = sorted(str(p.relative_to(root)) for p in (root / "vllm").rglob("*.py")
                     if "/worker/" in str(p) and "compressed_token_type_ids" in p.read_text())
    spawn = _function(_tree(root, "vllm/utils/system_utils.py"), "_maybe_force_spawn")
    request_memory = _function(_tree(root, "vllm/v1/worker/utils.py"), "request_memory")
    cache = _fields(_class(_tree(root, "vllm/config/cache.py"), "CacheConfig"))
    api_server = root / "vllm/entrypoints/openai/api_server.py"
    return {
        "version": version,
        "read_from": wheel or str(root),
        "requires_python": requires_python.group(1) if requires_python else None,
        "torch": torch_pin.group(1) if torch_pin else None,
        "engine_args": engine_args,
        "frontend_args": sorted(frontend),
        "llm_init": _params(_method(_tree(root, "vllm/entrypoints/llm.py"), "LLM", "__init__")),
        "llm_encode": _params(encode),
        "pooling_params": sorted(_fields(_class(_tree(root, "vllm/pooling_params.py"), "PoolingParams"))),
        "compress_token_type_ids": None if compress is None else {
            "module": "vllm.entrypoints.pooling.scoring.utils",
            "returns": ast.unparse(compress.returns) if compress.returns else None,
        },
        "token_type_runners": runners,
        "spawns_when_cuda_initialized": spawn is not None and "cuda_is_initialized" in ast.unparse(spawn),
        "request_memory_checks_free_memory": request_memory is not None and "free_memory" in ast.unparse(request_memory),
        "cache_config": {k: cache[k] for k in ("gpu_memory_utilization", "kv_cache_memory_bytes") if k in cache},
        "api_server_main": api_server.exists() and "__main__" in api_server.read_text(),
        "tokens_prompt": "TokensPrompt" in (root / "vllm/inputs/__init__.py").read_text(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("--wheel", help="the wheel's file name, recorded as the source of the facts")
    args = parser.parse_args()
    json.dump(record(args.src, args.wheel), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
