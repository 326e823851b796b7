"""The double-read merge rule (DESIGN section 6) as a pure function."""

from __future__ import annotations

import itertools

import pytest

from netmigrate.client.merge import AUTHORITATIVE, RETRY_FROM_TARGET, Reply, merge_double_read
from netmigrate.protocol.constants import Status


def r(status: Status, who: str) -> Reply:
    return Reply(int(status), who)


@pytest.mark.parametrize("status", [Status.OK, Status.NOT_FOUND])
def test_authoritative_target_wins_at_once(status: Status) -> None:
    target = r(status, "B")
    assert merge_double_read(None, target) is target
    assert merge_double_read(r(Status.OK, "A"), target) is target
    assert merge_double_read(r(Status.NOT_FOUND, "A"), target) is target


def test_owner_alone_is_never_enough() -> None:
    for status in Status:
        assert merge_double_read(r(status, "A"), None) is None
    assert merge_double_read(None, None) is None


def test_target_miss_falls_back_to_the_owner() -> None:
    owner = r(Status.OK, "A")
    assert merge_double_read(owner, r(Status.MISS, "B")) is owner
    assert merge_double_read(None, r(Status.MISS, "B")) is None  # wait for A


@pytest.mark.parametrize(
    "target_status",
    [s for s in Status if int(s) not in AUTHORITATIVE and s != Status.MISS],
    ids=lambda s: s.name,
)
def test_any_other_target_answer_never_falls_back_to_the_owner(target_status: Status) -> None:
    """B answering BUSY / ERROR / WRONG_OWNER may hold a newer acknowledged write that it
    cannot read right now: A's frozen copy would be a stale read (issue #12, item 1)."""
    target = r(target_status, "B")
    for owner in (None, r(Status.OK, "A"), r(Status.NOT_FOUND, "A"), r(Status.MISS, "A")):
        assert merge_double_read(owner, target) is target


def test_the_client_retries_every_unusable_target_answer() -> None:
    assert {int(Status.BUSY), int(Status.ERROR), int(Status.WRONG_OWNER)} == RETRY_FROM_TARGET


def test_every_combination_follows_the_rule() -> None:
    options = [None, *(r(s, "A") for s in Status)]
    for owner, target in itertools.product(options, [None, *(r(s, "B") for s in Status)]):
        got = merge_double_read(owner, target)
        if target is None:
            assert got is None
        elif target.status == Status.MISS:
            assert got is owner
        else:
            assert got is target
