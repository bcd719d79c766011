import pytest

from mteb_vllm.config import EngineConfig
from mteb_vllm.errors import EngineArgumentError


@pytest.mark.parametrize("field,value", [
    ("dtype", "float64"), ("max_num_seqs", 0), ("max_model_len", -3), ("gpu_memory_utilization", 1.5),
    ("tensor_parallel_size", 0), ("enforce_eager", "yes"), ("hf_overrides", [1]),
])
def test_bad_values_name_the_argument(field, value):
    with pytest.raises(EngineArgumentError, match=field):
        EngineConfig(model="m", **{field: value})


def test_unknown_engine_kwarg_suggests_close_match():
    cfg = EngineConfig(model="m", engine_kwargs={"max_num_seq": 3})
    with pytest.raises(EngineArgumentError, match="max_num_seqs"):
        cfg.check_engine_kwargs({"max_num_seqs", "seed"})


def test_engine_args_drop_unset_and_carry_head_dtype():
    args = EngineConfig(model="m", head_dtype="float32", engine_kwargs={"seed": 1}).to_engine_args()
    assert args["hf_overrides"] == {"head_dtype": "float32"}
    assert args["seed"] == 1 and args["runner"] == "pooling"
    assert "max_model_len" not in args
