"""The gateway role's inputs: every default is documented and validated with the same value,
and the users' passwords are marked secret."""

from __future__ import annotations

from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "gateway"


def test_defaults_match_the_argument_specs() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options)
    for name, value in defaults.items():
        assert options[name]["default"] == value, name
    assert options["gateway_users"].get("no_log") is True


def test_the_command_line_never_holds_a_password() -> None:
    text = (ROLE / "vars" / "main.yml").read_text()
    assert "password" not in text
    assert "--users" in text and "--no-auth" in text
