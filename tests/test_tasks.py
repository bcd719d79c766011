"""Task lookup and splitting: names, benchmarks, demo tasks, cost order and shards for job arrays."""

from __future__ import annotations

import random

import mteb
import pytest

from mteb_vllm.tasks import (
    TaskSelectionError,
    get_tasks,
    order_by_cost,
    parse_shard,
    select_tasks,
    shard_tasks,
    task_cost,
)

# mteb builds its benchmark registry in ~2 s once per process: these tests share one worker of make test-fast
pytestmark = pytest.mark.xdist_group("benchmark-registry")


def test_names_resolve_to_fresh_tasks_and_unknown_names_say_what_exists():
    sts, demo = get_tasks(["STS12", "MtebVllmDemoSTS"])
    assert sts.metadata.name == "STS12" and demo.metadata.name == "MtebVllmDemoSTS"
    assert get_tasks(["STS12"])[0] is not sts
    with pytest.raises(TaskSelectionError, match="STS1222.*Did you mean"):
        get_tasks(["STS1222"])
    assert [t.metadata.name for t in select_tasks()] == ["MtebVllmDemoSTS", "MtebVllmDemoRetrieval"]
    with pytest.raises(TaskSelectionError, match="unknown benchmark"):
        select_tasks(benchmark="MTEB(eng, v9)")


def test_cost_comes_from_mtebs_statistics_and_orders_largest_first():
    tasks = get_tasks(["STS12", "BIOSSES", "SICK-R"])
    costs = {t.metadata.name: task_cost(t) for t in tasks}
    assert costs["STS12"] > costs["BIOSSES"]  # 3108 pairs against 100
    ordered = [t.metadata.name for t in order_by_cost(tasks)]
    assert ordered == sorted(costs, key=lambda n: (-costs[n], n))


@pytest.fixture(scope="module")
def eng_v2_tasks():
    """MTEB(eng, v2)'s tasks and their costs, once for the module (each task_cost reads a statistics file)."""
    tasks = list(mteb.get_benchmark("MTEB(eng, v2)").tasks)
    costs = {t.metadata.name: task_cost(t) for t in tasks}
    assert len(costs) == len(tasks)
    return tasks, costs


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16, 50])
def test_shards_are_disjoint_cover_the_list_and_do_not_depend_on_its_order(n, eng_v2_tasks, monkeypatch):
    import mteb_vllm.tasks

    tasks, costs = eng_v2_tasks
    tasks = tasks[:]
    # the same costs task_cost computes (checked above against its statistics), read from memory: the split's
    # logic is what this test is about, and it asks for each task's cost ~3n times
    monkeypatch.setattr(mteb_vllm.tasks, "task_cost", lambda t: costs[t.metadata.name])
    shards = [[t.metadata.name for t in shard_tasks(tasks, i, n)] for i in range(n)]
    names = [t.metadata.name for t in tasks]
    assert sorted(sum(shards, [])) == sorted(names)  # cover, and no task twice
    shuffled = tasks[:]
    random.Random(n).shuffle(shuffled)
    assert shards == [[t.metadata.name for t in shard_tasks(shuffled, i, n)] for i in range(n)]
    if n <= len(tasks):
        loads = [sum(task_cost(t) for t in shard_tasks(tasks, i, n)) for i in range(n)]
        biggest = max(task_cost(t) for t in tasks)
        assert max(loads) - min(loads) <= biggest  # greedy largest-first keeps shards within one task


def test_shard_arguments_are_checked():
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b", "1/0"):
        with pytest.raises(TaskSelectionError, match="--shard takes i/N"):
            parse_shard(bad)
