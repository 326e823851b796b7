"""Paths of the files the package ships: the P4 program and its committed P4Info."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def p4_dir() -> Path:
    """The ``p4/`` folder: in a checkout the repository's own, in a wheel the packaged copy."""
    packaged = _HERE / "_p4"
    if packaged.is_dir():
        return packaged
    return _HERE.parents[1] / "p4"


def p4info_path() -> Path:
    return p4_dir() / "build" / "netmigrate.p4info.txtpb"


def p4_program_path() -> Path:
    return p4_dir() / "netmigrate.p4"
