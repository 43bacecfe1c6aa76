"""Port leases (daemon/ports.py): one port per live job, spread over the range, freed on release,
renamed when a submission gets its job id, re-adopted after a restart."""

import random

import pytest

from islurm.daemon.ports import PortPool


def test_leases_are_distinct_and_inside_the_range() -> None:
    pool = PortPool(20000, 20009, random.Random(1))
    ports = [pool.lease(f"L{i}") for i in range(10)]
    assert sorted(ports) == list(range(20000, 20010))
    assert pool.held() == {port: f"L{i}" for i, port in enumerate(ports)}


def test_an_exhausted_range_refuses_and_a_release_makes_room() -> None:
    pool = PortPool(20000, 20001, random.Random(2))
    first, _ = pool.lease("a"), pool.lease("b")
    with pytest.raises(RuntimeError, match="all 2 ports of 20000-20001 are leased"):
        pool.lease("c")
    pool.release("a")
    assert pool.lease("c") == first


def test_release_frees_every_port_of_the_holder_and_nothing_else() -> None:
    pool = PortPool(20000, 20099, random.Random(3))
    kept = pool.lease("keep")
    pool.lease("gone")
    pool.adopt(20099 if kept != 20099 else 20098, "gone")
    pool.release("gone")
    assert pool.held() == {kept: "keep"}
    pool.release("nobody")  # releasing what is not held is no error
    assert pool.held() == {kept: "keep"}


def test_rename_moves_the_lease_from_the_submission_to_the_job() -> None:
    pool = PortPool(20000, 20099, random.Random(4))
    port = pool.lease("L1-1")
    other = pool.lease("L1-2")
    pool.rename("L1-1", "4242")
    assert pool.held() == {port: "4242", other: "L1-2"}
    pool.release("L1-1")
    assert pool.held() == {port: "4242", other: "L1-2"}


def test_adopted_ports_are_never_leased_again() -> None:
    pool = PortPool(20000, 20002, random.Random(5))
    pool.adopt(20000, "4242")
    pool.adopt(20002, "4243")
    assert pool.lease("L1") == 20001
    assert pool.held() == {20000: "4242", 20001: "L1", 20002: "4243"}


def test_held_is_a_copy() -> None:
    pool = PortPool(20000, 20000)
    pool.lease("a")
    pool.held().clear()
    assert pool.held() == {20000: "a"}


def test_the_start_is_random_so_two_daemons_rarely_collide() -> None:
    firsts = {PortPool(20000, 20999, random.Random(seed)).lease("L") for seed in range(20)}
    assert len(firsts) > 10


@pytest.mark.parametrize(("low", "high"), [(0, 10), (10, 9), (1, 65536), (-5, 5)])
def test_bad_ranges_are_refused(low: int, high: int) -> None:
    with pytest.raises(ValueError, match=f"bad port range {low}-{high}"):
        PortPool(low, high)
