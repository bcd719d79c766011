"""Time one engine setting on the 2000-text encode set and on the 6216 short sentences of the generated
STS12-sized task (two calls, as mteb's STS evaluator makes them): how the CPU defaults in mteb_vllm.cpu_defaults and
backends.local were chosen (results in benchmarks/tuning.md).

    .venv/bin/python benchmarks/engine_settings.py '{"max_num_batched_tokens": 4096}' ['{"ENV_VAR": "value"}']

The first argument is extra VllmEncoderWrapper/engine arguments as JSON, the second environment variables
set before the engine starts. Run one setting per process.
"""

from __future__ import annotations

import json
import os
import sys
import time

if __name__ == "__main__":
    engine_args = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    os.environ.update(json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
    os.environ.setdefault("MTEB_VLLM_NO_PROGRESS", "1")
    from mteb_vllm import VllmEncoderWrapper, default_model_path
    from mteb_vllm.workloads import sts_task, variable_texts

    texts = variable_texts(2000)
    t0 = time.perf_counter()
    wrapper = VllmEncoderWrapper(default_model_path(), **{"dtype": "float32", **engine_args})
    start = time.perf_counter() - t0
    wrapper.embed_texts(texts[:50])
    t0 = time.perf_counter()
    wrapper.embed_texts(texts)
    took = time.perf_counter() - t0
    sts = sts_task("GeneratedSTS12", 3108, 12)
    sts.load_data()
    pairs = sts.dataset["test"]
    t0 = time.perf_counter()
    for column in ("sentence1", "sentence2"):
        wrapper.embed_texts(list(pairs[column]))
    sts_took = time.perf_counter() - t0
    print(json.dumps({"engine_args": engine_args, "env": sys.argv[2:], "start_s": round(start, 1),
                      "encode_s": round(took, 1), "sts_encode_s": round(sts_took, 1)}))
    wrapper.close()
