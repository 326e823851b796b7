"""The per-slot rule of reconcile: the switch may be ahead of the agents, never behind."""

from __future__ import annotations

import pytest

from netmigrate.migration.controller import _AgentView, wanted_entry, wanted_epoch

A, B = 1, 2


@pytest.mark.parametrize(
    ("view", "have", "want"),
    [
        # Owned, nothing moving: the owner, whatever the switch has.
        (_AgentView(A), (A, 0), (A, 0)),
        (_AgentView(A), (B, 0), (A, 0)),
        (_AgentView(A), (A, B), (A, 0)),
        # In flight A -> B and the switch restarted (default owner A): back to MIGRATING.
        (_AgentView(A, B, "copying", True), (A, 0), (A, B)),
        (_AgentView(A, B, "completing", True), (A, 0), (A, B)),
        # START not through yet: the source resends it, the switch flips by itself.
        (_AgentView(A, B, "starting", False), (A, 0), (A, 0)),
        (_AgentView(A, B, "starting", True), (A, 0), (A, B)),
        # The switch is ahead on the same move: COMPLETE passed after the agents were read.
        (_AgentView(A, B, "copying", True), (B, 0), (B, 0)),
        (_AgentView(A, B, "completing", True), (A, B), (A, B)),
        # Ahead on some other move is not ahead: the agents win.
        (_AgentView(A, B, "copying", True), (A, 3), (A, B)),
        (_AgentView(A, B, "copying", True), (3, 0), (A, B)),
        # Only the target reported the move (no source phase).
        (_AgentView(A, B, "", True), (A, 0), (A, B)),
    ],
)
def test_wanted_entry(view: _AgentView, have: tuple[int, int], want: tuple[int, int]) -> None:
    assert wanted_entry(view, have) == want


E = 7  # the epoch of the move in flight, or the owner's


@pytest.mark.parametrize(
    ("view", "entry", "epoch"),
    [
        # Nothing moving: the owner's persisted epoch (a switch restart's 0 is raised to it).
        (_AgentView(A, owner_epoch=E), (A, 0), E),
        (_AgentView(A), (A, 0), 0),  # no epoch known (agents older than epochs): none
        # In flight and through the switch: the move's epoch (its resends and COMPLETE equal).
        (_AgentView(A, B, "copying", True, E - 1, E), (A, B), E),
        (_AgentView(A, B, "completing", True, E - 1, E), (B, 0), E),
        # START not through yet: none (the START sets it; a write could undo its flip).
        (_AgentView(A, B, "starting", False, E, E), (A, 0), 0),
        # A source older than epochs reports none: the owner's is the safe floor.
        (_AgentView(A, B, "copying", True, 3), (A, B), 3),
    ],
)
def test_wanted_epoch(view: _AgentView, entry: tuple[int, int], epoch: int) -> None:
    assert wanted_epoch(view, entry) == epoch
