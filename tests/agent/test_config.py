"""Agent configuration: URLs, secrets, slots, addresses. Bad input gets a clear error."""

from __future__ import annotations

import argparse

import pytest

from netmigrate.agent import cli
from netmigrate.agent.config import (
    PASSWORD_ENV,
    AgentConfig,
    ConfigError,
    RedisTarget,
    default_max_datagram,
    parse_host_port,
    parse_redis_url,
    parse_slots,
    resolve_password,
)
from netmigrate.protocol.path_mtu import datagram_limit, smallest_interface_mtu


def test_redis_urls() -> None:
    t = parse_redis_url("redis://alice:s%40cret@10.0.0.2:6380/0")
    assert (t.host, t.port, t.username, t.password, t.tls) == (
        "10.0.0.2",
        6380,
        "alice",
        "s@cret",
        False,
    )
    assert parse_redis_url("rediss://h").tls is True
    assert parse_redis_url("redis://h").port == 6379
    u = parse_redis_url("unix:///run/redis.sock")
    assert u.unix_path == "/run/redis.sock"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://h:1", "scheme"),
        ("redis://h:1/3", "database 0"),
        ("redis://h:1?db=2", "database 0"),
        ("redis://h:1?timeout=3", "parameter"),
        ("unix://", "socket path"),
        ("redis://h:99999", "--redis"),
    ],
)
def test_bad_redis_urls(url: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_redis_url(url)


def test_password_never_in_repr_or_display() -> None:
    t = parse_redis_url("redis://alice:hunter2@h:1")
    assert "hunter2" not in repr(t)
    assert t.display() == "redis://alice:***@h:1"
    assert parse_redis_url("redis://:hunter2@h:1").display() == "redis://:***@h:1"
    assert parse_redis_url("unix:///s.sock").display() == "unix:///s.sock"


def test_password_from_file_env_or_url(tmp_path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    target = parse_redis_url("redis://bob@h:1")
    assert resolve_password(target, str(secret), {}).password == "from-file"
    assert resolve_password(target, None, {PASSWORD_ENV: "from-env"}).password == "from-env"
    with_url = parse_redis_url("redis://bob:from-url@h:1")
    assert resolve_password(with_url, None, {PASSWORD_ENV: "from-env"}).password == "from-url"
    with pytest.raises(ConfigError, match="twice"):
        resolve_password(with_url, str(secret), {})
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_password(target, str(tmp_path / "missing"), {})
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        resolve_password(target, str(tmp_path / "empty"), {})
    assert resolve_password(target, None, {}).password is None


def test_slots_syntax() -> None:
    assert parse_slots("none") == frozenset()
    assert parse_slots("all") == parse_slots("0-16383") == frozenset(range(16384))
    assert parse_slots("0-2, 7,10-11") == {0, 1, 2, 7, 10, 11}
    for bad in ("5-2", "16384", "-1", "a-b", "1,,2", "0-16384"):
        with pytest.raises(ConfigError, match="--slots"):
            parse_slots(bad)


def test_host_port() -> None:
    assert parse_host_port("127.0.0.1:0", "--listen") == ("127.0.0.1", 0)
    assert parse_host_port("[::1]:50000", "--listen") == ("::1", 50000)
    for bad in ("nohost", ":5", "h:x", "h:70000"):
        with pytest.raises(ConfigError, match="--listen"):
            parse_host_port(bad, "--listen")


def test_config_ranges() -> None:
    target = RedisTarget()
    base = {"redis": target, "listen": ("127.0.0.1", 0), "keyspace": 1, "server_id": 1}
    AgentConfig(**base)
    for change, error in [
        ({"server_id": 0}, "server-id"),
        ({"server_id": 255}, "server-id"),
        ({"keyspace": 70000}, "keyspace"),
        ({"max_datagram": 70000}, "max-datagram"),
        ({"copy_chunk_bytes": 100}, "copy-chunk-bytes"),
        ({"copy_chunk_bytes": 8 << 20}, "copy-chunk-bytes"),  # above the batch size
        ({"copy_batch_bytes": 32 << 20}, "copy-batch-bytes"),  # near the message cap
    ]:
        with pytest.raises(ConfigError, match=error):
            AgentConfig(**{**base, **change})


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(
        [
            "--redis",
            "redis://h:1",
            "--listen",
            "127.0.0.1:0",
            "--keyspace",
            "5",
            "--server-id",
            "2",
            *argv,
        ]
    )


def test_cli_builds_config(tmp_path) -> None:
    config = cli.build_config(_args("--slots", "0-9", "--control", "127.0.0.1:0"))
    assert config.initial_slots == frozenset(range(10))
    assert config.control == ("127.0.0.1", 0)
    assert (config.keyspace, config.server_id) == (5, 2)
    assert (config.copy_batch_bytes, config.copy_chunk_bytes) == (4 << 20, 1 << 20)
    config = cli.build_config(_args("--copy-batch-bytes", "65536", "--copy-chunk-bytes", "4096"))
    assert (config.copy_batch_bytes, config.copy_chunk_bytes) == (65536, 4096)
    with pytest.raises(ConfigError, match="go together"):
        cli.build_config(_args("--control", "h:1", "--control-tls-cert", "x"))
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="no such file"):
        cli.build_config(
            _args("--control", "h:1", "--control-tls-cert", str(cert), "--control-tls-key", "nope")
        )
    with pytest.raises(ConfigError, match="without --control"):
        cli.build_config(_args("--control-tls-cert", str(cert), "--control-tls-key", str(cert)))


def test_max_datagram_is_the_keyspace_setting_or_derived() -> None:
    assert cli.build_config(_args()).max_datagram is None
    assert cli.build_config(_args("--max-datagram", "1472")).max_datagram == 1472
    with pytest.raises(ConfigError, match="max-datagram 63"):
        cli.build_config(_args("--max-datagram", "63"))


def test_default_max_datagram_follows_the_route_or_the_interface() -> None:
    base = {"redis": RedisTarget(), "keyspace": 1, "server_id": 1}
    to_service = AgentConfig(**base, listen=("0.0.0.0", 0), service=("127.0.0.1", 50000))
    assert default_max_datagram(to_service) == (65507, "route to the service 127.0.0.1")
    on_lo = AgentConfig(**base, listen=("127.0.0.1", 0))
    assert default_max_datagram(on_lo) == (65507, "interface lo of 127.0.0.1")
    anywhere = AgentConfig(**base, listen=("0.0.0.0", 0))
    limit = datagram_limit(smallest_interface_mtu())
    assert default_max_datagram(anywhere) == (limit, "smallest interface MTU")
