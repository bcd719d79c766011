"""Write BENCHMARKS.md from the JSON files the benchmark commands leave behind, plus the tuning log
(benchmarks/tuning.md, the only hand-copied figures, each from a run of benchmarks/engine_settings.py).

    make bench        # runs the three commands below, then this script
    .venv/bin/python benchmarks/encode_throughput.py
    .venv/bin/python benchmarks/rerank_throughput.py
    .venv/bin/mteb-vllm bench --dtypes float32 bfloat16 --output-folder benchmarks/results
    .venv/bin/python benchmarks/make_report.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent


def _load(name: str) -> dict | None:
    path = HERE / name
    return json.loads(path.read_text()) if path.exists() else None


def _runs_range(row: dict, key: str) -> str:
    values = [run[key] for run in row.get("runs", [])]
    return f"{min(values):.1f}-{max(values):.1f}" if len(values) > 1 else ""


def _encode_section(data: dict) -> list[str]:
    r = data["results"]
    repeats = data.get("repeats", 1)
    lines = [
        "## Encode throughput (issues 2 and 4): 2000 texts of 5-200 words, all-MiniLM-L6-v2, float32",
        "",
        f"`benchmarks/encode_throughput.py`, {data['n_texts']} texts, {data['tokens']:,} tokens. Each backend in a "
        f"fresh process, {repeats} rounds of one process per backend, interleaved; each figure is the median "
        "(the range of the runs in brackets). *Start* is model load (sentence-transformers) or engine start. "
        "*e2e STS-3000* is what a user waits for: from a cold start, load the model and `mteb.evaluate` a "
        "generated 3000-pair STS task (the size of STS12, which cannot be downloaded here). *seconds* is the "
        "2000-text encode afterwards, warmed up.",
        "",
        "| backend | seconds | texts/s | tokens/s | vs sentence-transformers | start (s) | e2e STS-3000 (s) | e2e vs sentence-transformers | STS-3000 score | min cosine vs ST |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"st": "sentence-transformers", "ours": "mteb-vllm", "builtin": "mteb built-in vLLM wrapper"}
    for key, row in r.items():
        spread = _runs_range(row, "seconds")
        e2e_spread = _runs_range(row, "e2e_sts3000_s")
        lines.append(f"| {names.get(key, key)} | {row['seconds']:.1f}{f' ({spread})' if spread else ''} | "
                     f"{row['texts_per_s']:.1f} | {row['tokens_per_s']:,.0f} | "
                     f"{row.get('ratio_vs_st', float('nan')):.2f}x | {row['engine_start_s']:.1f} | "
                     f"{row['e2e_sts3000_s']:.1f}{f' ({e2e_spread})' if e2e_spread else ''} | "
                     f"{row.get('e2e_ratio_vs_st', float('nan')):.2f}x | {row['sts3000_score']:.4f} | "
                     f"{row.get('min_cosine_vs_st', float('nan')):.7f} |")
    return lines + [""]


def _rerank_section(data: dict) -> list[str]:
    lines = [
        "## Rerank throughput (issue 3): 2000 (query, document) pairs, MiniLM-L6-shaped BERT cross-encoder, float32",
        "",
        f"`benchmarks/rerank_throughput.py`, {data['n_pairs']} pairs (20 documents of 5-200 words per query), "
        f"{data['tokens']:,} tokens, {data.get('repeats', 1)} interleaved rounds, medians (range in brackets). The model is the packaged all-MiniLM-L6-v2 encoder with a seeded one-label "
        "head: the shape of cross-encoder/ms-marco-MiniLM-L6-v2 (no reranker weights can be downloaded here).",
        "",
        "| backend | seconds | pairs/s | tokens/s | vs sentence-transformers | start (s) | max abs score diff vs ST |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"st": "sentence-transformers CrossEncoder", "ours": "mteb-vllm", "builtin": "mteb built-in vLLM wrapper"}
    for key, row in data["results"].items():
        spread = _runs_range(row, "seconds")
        lines.append(f"| {names.get(key, key)} | {row['seconds']:.1f}{f' ({spread})' if spread else ''} | {row['pairs_per_s']:.1f} | "
                     f"{row['tokens_per_s']:,.0f} | {row.get('ratio_vs_st', float('nan')):.2f}x | "
                     f"{row['engine_start_s']:.1f} | {row.get('max_abs_diff_vs_st', float('nan')):.2e} |")
    return lines + [""]


def _bench_section(data: dict) -> list[str]:
    from mteb_vllm.bench import markdown_report

    cfg = data["config"]
    return [
        "## Throughput vs latency (issue 4): `mteb-vllm bench`",
        "",
        f"`mteb-vllm bench --dtypes {' '.join(cfg['dtypes'])} --output-folder benchmarks/results` "
        f"(packaged all-MiniLM-L6-v2, {cfg['n']} texts per workload, batch sizes {cfg['batch_sizes']}). "
        "A batch's latency is one encode call of that many texts; model FLOP/s count 2 FLOPs per weight per "
        "token plus attention, against the matmul peak measured in the same run. Each call is one batch, as a "
        "caller streaming batches would send them: sentence-transformers pads a batch to its longest text, "
        "vLLM does not, which is why the sentence-transformers variable-length rows drop. Given a whole list at once, "
        "sentence-transformers sorts it by length first; that fairer comparison is the 2000-text table above.",
        "",
        "![throughput vs latency](benchmarks/results/bench.png)",
        "",
        markdown_report(data),
    ]


def main() -> None:
    encode, rerank = _load("encode_throughput.json"), _load("rerank_throughput.json")
    bench = _load("results/bench.json")
    first = encode or rerank or bench
    lines = ["# Benchmarks", "",
             "Generated by `benchmarks/make_report.py` from the JSON the benchmark commands wrote "
             "(`make bench` reruns everything). Each table comes from one run of its command on the machine below; "
             "ratios compare backends measured in that run. This is a shared 2-core virtual machine: the same "
             "measurement moves by 5-15 % between processes, so the encode and rerank commands run three "
             "interleaved rounds and report medians with the range of the runs.", ""]
    if first:
        machine = (bench or {}).get("machine") or first.get("machine")
        versions = (bench or {}).get("versions") or first.get("versions")
        lines += [f"Machine: `{json.dumps(machine)}`", "", f"Versions: `{json.dumps(versions)}`", ""]
    if encode:
        lines += _encode_section(encode)
    if rerank:
        lines += _rerank_section(rerank)
    if bench:
        lines += _bench_section(bench)
    tuning = HERE / "tuning.md"
    if tuning.exists():  # the hand-run tuning log, kept verbatim
        lines += [tuning.read_text(), ""]
    lines += [
        "## On a GPU",
        "",
        "The same commands run unchanged on a CUDA machine with `pip install \"mteb-vllm[gpu]\"`: the CPU-only "
        "defaults (in-process engine, explicit KV cache size, 4096-token steps, thread binding) switch off, "
        "vLLM's own GPU defaults apply, and `--dtypes float16 bfloat16` are the interesting rows. Expect the "
        "gap to sentence-transformers to grow with model size and batch size: unpadded batches and half "
        "precision matter most where a padded fp32 batch would waste the most compute.",
        "",
    ]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    print((ROOT / "BENCHMARKS.md").read_text())


if __name__ == "__main__":
    main()
