"""Unit tests of the private module_utils _netmigrate (guarded imports) and _redis (connect)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args
from ansible_collections.netmigrate.core.plugins.module_utils import _netmigrate, _redis


def connect_params(**overrides: Any) -> dict[str, Any]:
    """The connection options with their argument-spec defaults, as a module would have them."""
    params = {name: spec.get("default") for name, spec in _redis.redis_argument_spec().items()}
    params.update(overrides)
    return params


def test_fail_imports_names_the_library_and_interpreter(capsys: pytest.CaptureFixture[str]) -> None:
    # The module must exit inside the context: its output profile comes from the patched args.
    with patch_module_args({}), pytest.raises(SystemExit) as exited:
        module = AnsibleModule(argument_spec={})
        _netmigrate.fail_imports(module, "redis", "netmigrate.no_such_module")
    result = json.loads(capsys.readouterr().out)

    assert exited.value.code == 1
    assert result["failed"] is True
    msg = result["msg"]
    assert "Failed to import the required Python library (netmigrate, module " in msg
    assert "netmigrate.no_such_module" in msg
    assert "ansible_python_interpreter" in msg


def test_fail_imports_passes_when_everything_imports() -> None:
    with patch_module_args({}):
        module = AnsibleModule(argument_spec={})
        _netmigrate.fail_imports(module, "redis", "netmigrate.redis_admin")  # must not exit
    assert _netmigrate.optional_import("netmigrate.redis_admin") is not None


def test_password_is_no_log_in_the_shared_spec() -> None:
    spec = _redis.redis_argument_spec()
    assert spec["login_password"]["no_log"] is True
    spec["login_port"]["default"] = 1  # a copy: the next caller still gets the real default
    assert _redis.redis_argument_spec()["login_port"]["default"] == 6379


def test_describe_target() -> None:
    assert _redis.describe_target(connect_params()) == "localhost:6379"
    assert _redis.describe_target(connect_params(login_unix_socket="/r.sock")) == "unix:/r.sock"


def test_connect_refused(unused_port: int) -> None:
    with pytest.raises(
        _redis.RedisConnectError, match=f"cannot reach Redis at 127.0.0.1:{unused_port}"
    ):
        _redis.connect(connect_params(login_host="127.0.0.1", login_port=unused_port))


def test_tls_files_need_tls() -> None:
    with pytest.raises(_redis.RedisConnectError, match="ca_certs only apply with tls=true"):
        _redis.connect(connect_params(ca_certs="/etc/ssl/ca.pem"))


def test_connect_wrong_user_password(redis_node_server: Any) -> None:
    redis_node_server.client().execute_command("ACL", "SETUSER", "ops", "on", ">good-pw", "+@all")
    params = connect_params(
        login_host="127.0.0.1", login_port=redis_node_server.port, login_user="ops"
    )
    with pytest.raises(_redis.RedisConnectError) as refused:
        _redis.connect({**params, "login_password": "bad-pw-789"})
    assert str(refused.value).startswith(
        f"Redis at 127.0.0.1:{redis_node_server.port} refused the login of user 'ops'"
    )
    assert "bad-pw-789" not in str(refused.value)

    client = _redis.connect({**params, "login_password": "good-pw"})
    try:
        assert client.acl_whoami() == "ops"
    finally:
        client.close()


def test_connect_unix_socket(redis_node_server_with_socket: Any) -> None:
    sock = redis_node_server_with_socket.directory / "redis.sock"
    client = _redis.connect(connect_params(login_unix_socket=str(sock)))
    try:
        assert client.connection_pool.connection_kwargs["path"] == str(sock)
        assert client.info("server")["tcp_port"] == redis_node_server_with_socket.port
    finally:
        client.close()

    missing = sock.with_name("missing.sock")
    with pytest.raises(_redis.RedisConnectError, match=f"cannot reach Redis at unix:{missing}"):
        _redis.connect(connect_params(login_unix_socket=str(missing)))
