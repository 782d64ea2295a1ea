"""A 2-node job: one task per emulated node, global ranks 0 and 1, and a gloo all_reduce between them set up by
submitit's TorchDistributedEnvironment (MASTER_ADDR is the first node's name: cluster.sh maps it to loopback)."""

from __future__ import annotations

import os
import sys
from typing import Any

import cloudpickle
import pytest

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job process cannot import this module

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _all_reduce_rank_plus_one() -> dict[str, Any]:
    """Each task contributes rank + 1; with 2 tasks every task must see 1 + 2 = 3."""
    from datetime import timedelta

    import submitit
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    env = submitit.helpers.TorchDistributedEnvironment().export()
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    try:
        value = torch.tensor([float(env.rank + 1)])
        dist.all_reduce(value)
        return {
            "rank": env.rank,
            "world_size": dist.get_world_size(),
            "node": os.environ["SLURMD_NODENAME"],
            "sum": value.item(),
            "master_addr": env.master_addr,
        }
    finally:
        dist.destroy_process_group()


def test_two_node_job_has_two_ranks_on_two_nodes(make_executor: Any, wait_done: Any, slurm_cluster: Any) -> None:
    job = make_executor(nodes=2, tasks_per_node=1).submit(_all_reduce_rank_plus_one)
    wait_done(job, 180)
    results = sorted(job.results(), key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["world_size"] == 2 for r in results)
    nodes = [r["node"] for r in results]
    assert len(set(nodes)) == 2 and set(nodes) <= set(slurm_cluster.nodes), nodes
    assert results[0]["master_addr"] == nodes[0]  # rank 0's node, by name, as on a real cluster
    assert [r["sum"] for r in results] == [3.0, 3.0]
