"""Per-port fault injection for tests: drop probability and added delay on egress.

The lab's kernels have no netem, so the switch itself can lose and delay frames it sends
out of a port. A fault is given as ``PORT:drop=P,delay_ms=D`` (either key may be left out;
``PORT:`` alone or ``PORT:none`` clears it), at start (``--fault``) or at run time through
the control socket (:mod:`netmigrate.switch.control`).

Delay never reorders a port: a frame leaves no earlier than the frame queued before it on
the same port, also when the delay is lowered while frames wait.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Largest delay we accept: one minute.
MAX_DELAY_MS = 60_000.0
MAX_PORT = (1 << 9) - 1


class FaultError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Fault:
    drop: float = 0.0
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop <= 1.0:
            raise FaultError(f"drop must be a probability in [0, 1], got {self.drop}")
        if not 0.0 <= self.delay_ms <= MAX_DELAY_MS:
            raise FaultError(f"delay_ms must be in [0, {MAX_DELAY_MS:g}], got {self.delay_ms}")

    @property
    def active(self) -> bool:
        return self.drop > 0.0 or self.delay_ms > 0.0

    def describe(self) -> str:
        return f"drop={self.drop:g},delay_ms={self.delay_ms:g}"


def check_port(port: int) -> int:
    if not 0 < port <= MAX_PORT:
        raise FaultError(f"port must be in 1..{MAX_PORT}, got {port}")
    return port


def parse_fault(text: str) -> tuple[int, Fault]:
    """``"1:drop=0.01,delay_ms=5"`` -> (1, Fault(0.01, 5.0))."""
    port_text, sep, rest = text.partition(":")
    if not sep:
        raise FaultError(f"fault {text!r}: want PORT:drop=P,delay_ms=D")
    try:
        port = check_port(int(port_text))
    except ValueError as exc:
        raise FaultError(f"fault {text!r}: {exc}") from None
    values = {"drop": 0.0, "delay_ms": 0.0}
    rest = rest.strip()
    if rest and rest != "none":
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or key not in values:
                raise FaultError(f"fault {text!r}: unknown setting {item!r} (drop, delay_ms)")
            try:
                values[key] = float(value)
            except ValueError:
                raise FaultError(f"fault {text!r}: {key} is not a number: {value!r}") from None
    try:
        return port, Fault(**values)
    except FaultError as exc:
        raise FaultError(f"fault {text!r}: {exc}") from None
