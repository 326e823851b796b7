"""The double-read merge rule (DESIGN section 6) as a pure function."""

from __future__ import annotations

import itertools

import pytest

from netmigrate.client.merge import AUTHORITATIVE, Reply, merge_double_read
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


@pytest.mark.parametrize("target_status", [s for s in Status if int(s) not in AUTHORITATIVE])
def test_non_authoritative_target_falls_back_to_the_owner(target_status: Status) -> None:
    owner = r(Status.OK, "A")
    assert merge_double_read(owner, r(target_status, "B")) is owner
    assert merge_double_read(None, r(target_status, "B")) is None  # wait for A


def test_every_combination_follows_the_rule() -> None:
    options = [None, *(r(s, "A") for s in Status)]
    for owner, target in itertools.product(options, [None, *(r(s, "B") for s in Status)]):
        got = merge_double_read(owner, target)
        if target is not None and target.status in AUTHORITATIVE:
            assert got is target
        elif target is None:
            assert got is None
        else:
            assert got is owner
