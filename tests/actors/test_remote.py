"""Typed handles: a role's method is named by its function, and the in-process twin delivers
errors at ``get`` like Ray does."""

import pytest

from actors.remote import LocalCluster
from framework.records import GenerationRequest


class Counter:
    def __init__(self, *, start: int):
        self.n = start

    def add(self, k: int) -> int:
        if k < 0:
            raise ValueError("negative")
        self.n += k
        return self.n


class Other:
    def add(self, k: int) -> int:
        return k


def test_a_handle_calls_its_classs_methods_and_refuses_others():
    cluster = LocalCluster()
    counter = cluster.spawn(Counter, start=1)
    first = counter.call(Counter.add, 2)
    assert cluster.get([first, counter.call(Counter.add, first)]) == [3, 6]  # a future passed on is resolved
    with pytest.raises(TypeError, match="Other.add is not a method of Counter"):
        counter.call(Other.add, 1)
    failed = counter.call(Counter.add, -1)  # the error waits for get(), as a Ray task error does
    with pytest.raises(ValueError, match="negative"):
        cluster.get(failed)


def test_a_request_is_dealt_out_every_nth_item():
    request = GenerationRequest(k=3, episodes=tuple("abcde"), mode="paths", demonstrations=tuple(range(4)))
    parts = request.split(2)
    assert [p.episodes for p in parts] == [("a", "c", "e"), ("b", "d")]
    assert [p.demonstrations for p in parts] == [(0, 2), (1, 3)]
    assert all(p.k == 3 and p.mode == "paths" for p in parts)


def test_what_the_cluster_cannot_hold_is_named_before_anything_starts():
    from actors.remote import Ask, check_fits
    from framework.errors import InputError

    learner = [Ask(f"learner {i}", "pipeline.resources.learner", cpus=1, gpus=1) for i in range(2)]
    judge = Ask("judge", "pipeline.resources.judge", resources=(("judge_node", 0.01),))
    two_gpu_nodes = [{"CPU": 2, "GPU": 1}, {"CPU": 2, "GPU": 1, "judge_node": 1}]
    check_fits([[learner[0]], [learner[1]], [judge]], two_gpu_nodes, "SPREAD")  # fits: one GPU each
    with pytest.raises(InputError, match=r"asks for 3 GPU \(pipeline.resources.learner 3 × 1\) but the cluster has 2"):
        check_fits([[a] for a in learner + [Ask("learner 2", "pipeline.resources.learner", gpus=1)]],
                   two_gpu_nodes, "PACK")
    with pytest.raises(InputError, match=r"learner 0 \(pipeline.resources.learner\) and learner 1 .* share a bundle"):
        check_fits([learner], two_gpu_nodes, "PACK")  # two GPUs in one bundle: no node has them
    with pytest.raises(InputError, match="no node left for judge"):  # both need the one node with judge_node
        check_fits([[learner[0]], [judge]], [{"CPU": 2, "GPU": 1, "judge_node": 1}, {"CPU": 8}], "STRICT_SPREAD")
    with pytest.raises(InputError, match=r"asks for 0.01 gpu_node .* but the cluster has 0"):
        check_fits([[Ask("generator 0", "pipeline.resources.generator", resources=(("gpu_node", 0.01),))]],
                   two_gpu_nodes, "PACK")
