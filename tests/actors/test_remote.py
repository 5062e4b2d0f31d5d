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
