"""The wire layouts live in ``protocol``: the P4 generator and the lab switch import them
downward, so neither needs the other."""

from __future__ import annotations

import subprocess
import sys

from netmigrate.protocol.constants import HEADER, HEADER_LEN
from netmigrate.protocol.layout import NM_FIELD_NAMES, NM_LAYOUT, NM_SLOT


def test_layout_follows_the_header_struct() -> None:
    assert [name for name, _, _ in NM_LAYOUT] == list(NM_FIELD_NAMES)
    assert sum(width for _, _, width in NM_LAYOUT) == HEADER_LEN * 8
    fields = dict.fromkeys(NM_FIELD_NAMES, 0) | {"slot": 0x1234}
    packed = HEADER.pack(*fields.values())
    assert packed[NM_SLOT : NM_SLOT + 2] == b"\x12\x34"


def test_p4_constants_generator_does_not_load_the_switch() -> None:
    code = (
        "import sys\n"
        "import netmigrate.p4rt.gen_constants as g\n"
        "g.render()\n"
        "print(sorted(m for m in sys.modules if m.startswith('netmigrate.switch')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
