"""The control PKI (module_utils/_pki.py, module control_pki): made once, unchanged when run
again, a leaf made again only when it must be, keys private, safe to run from several tasks at
once."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
from ansible_collections.netmigrate.core.plugins.module_utils._pki import LeafSpec, ensure_pki
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

AGENT = LeafSpec("agent-r1", "r1", ("r1.lab",), ("10.0.0.11", "127.0.0.1"))
CONTROLLER = LeafSpec("controller", "controller", usages=("client",))


def _cert(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def test_made_once_then_unchanged(tmp_path: Path) -> None:
    d = str(tmp_path / "pki")
    first = ensure_pki(d, "Test CA", [AGENT, CONTROLLER])
    assert first.changed and first.ca_changed
    assert stat.S_IMODE((tmp_path / "pki").stat().st_mode) == 0o700
    for name in ("ca", "agent-r1", "controller"):
        assert stat.S_IMODE((tmp_path / "pki" / f"{name}.key").stat().st_mode) == 0o600
    ca = _cert(first.ca_cert)
    agent = _cert(first.leaves["agent-r1"][0])
    agent.verify_directly_issued_by(ca)
    alt = agent.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(a) for a in alt.get_values_for_type(x509.IPAddress)} == {"10.0.0.11", "127.0.0.1"}
    eku = set(
        _cert(first.leaves["controller"][0])
        .extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        .value
    )
    assert eku == {ExtendedKeyUsageOID.CLIENT_AUTH}

    before = {p.name: p.read_bytes() for p in (tmp_path / "pki").iterdir()}
    again = ensure_pki(d, "Test CA", [AGENT, CONTROLLER])
    assert not again.changed
    assert {p.name: p.read_bytes() for p in (tmp_path / "pki").iterdir()} == before


def test_a_leaf_is_made_again_only_when_it_must(tmp_path: Path) -> None:
    d = str(tmp_path)
    ensure_pki(d, "Test CA", [AGENT, CONTROLLER])
    controller_pem = (tmp_path / "controller.pem").read_bytes()
    moved = LeafSpec("agent-r1", "r1", ("r1.lab",), ("10.0.0.99", "127.0.0.1"))
    result = ensure_pki(d, "Test CA", [moved, CONTROLLER])
    assert result.leaves["agent-r1"][2:] == (True, "names other addresses")
    assert not result.leaves["controller"][2] and not result.ca_changed
    assert (tmp_path / "controller.pem").read_bytes() == controller_pem

    (tmp_path / "controller.key").write_bytes((tmp_path / "agent-r1.key").read_bytes())
    assert ensure_pki(d, "Test CA", [moved, CONTROLLER]).leaves["controller"][3] == (
        "does not match its key"
    )
    assert ensure_pki(d, "Test CA", [moved], renew_days=10_000).ca_changed


def test_a_new_ca_makes_every_leaf_new(tmp_path: Path) -> None:
    ensure_pki(str(tmp_path), "Test CA", [AGENT])
    (tmp_path / "ca.pem").unlink()
    result = ensure_pki(str(tmp_path), "Test CA", [AGENT])
    assert result.ca_changed and result.leaves["agent-r1"][3] == "the CA is new"
    _cert(result.leaves["agent-r1"][0]).verify_directly_issued_by(_cert(result.ca_cert))


def test_check_mode_writes_nothing(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    result = ensure_pki(str(d), "Test CA", [AGENT], check=True)
    assert result.changed and not d.exists()
    ensure_pki(str(d), "Test CA", [AGENT])
    planned = ensure_pki(str(d), "Test CA", [AGENT, CONTROLLER], check=True)
    assert planned.leaves["controller"][2] and not (d / "controller.pem").exists()


def test_tasks_at_once_share_one_ca(tmp_path: Path) -> None:
    """One task per agent host, all delegated to the controller, at the same moment."""
    leaves = [LeafSpec(f"agent-{i}", f"a{i}", ip_addresses=("127.0.0.1",)) for i in range(6)]
    errors: list[BaseException] = []

    def run(leaf: LeafSpec) -> None:
        try:
            ensure_pki(str(tmp_path), "Test CA", [leaf])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(leaf,)) for leaf in leaves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ca = _cert(str(tmp_path / "ca.pem"))
    for leaf in leaves:
        _cert(str(tmp_path / f"{leaf.name}.pem")).verify_directly_issued_by(ca)


@pytest.mark.parametrize(
    "bad",
    [
        dict(name="../x", common_name="x"),
        dict(name="ca", common_name="x"),
        dict(name="x", common_name="x", ip_addresses=("not-an-ip",)),
        dict(name="x", common_name="x", usages=("peer",)),
    ],
)
def test_bad_input_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        LeafSpec(**bad)
