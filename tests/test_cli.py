"""Settings come from flags, AMQPD_* variables, a TOML file and defaults, in that order; bad ones exit 2."""

from __future__ import annotations

import dataclasses
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from amqpd.broker.server.cli import choose_loop, main
from amqpd.broker.server.config import PORT_OFF, Config
from amqpd.broker.server.healthcheck import check
from amqpd.broker.server.settings import ConfigError, check_url_for, env_name, flag_name, load_config, parse_invocation
from tests.support.fake_broker import FakeBroker
from tests.support.loops import LOOP_FACTORIES
from tests.support.processes import AmqpdProcess, free_port

# A value for every Config field that differs from its default, as the string a user would type.
NON_DEFAULT = {
    "host": "127.0.0.2",
    "port": "5673",
    "data_dir": "/srv/amqpd",
    "store": "memory://",
    "default_user": "admin",
    "default_pass": "s3cret",
    "default_vhost": "prod",
    "log_level": "debug",
    "heartbeat": "30",
    "frame_max": "8192",
    "channel_max": "64",
    "max_message_size": "1048576",
    "handshake_timeout": "2.5",
    "shutdown_timeout": "1.5",
    "consumer_timeout": "60000",
    "loop": "asyncio",
    "flow_high": "30000",
    "flow_low": "15000",
    "loopback_users": "guest,admin",
    "definitions": "/etc/amqpd/definitions.json",
    "max_connections": "500",
    "tls_port": "5681",
    "tls_cert": "certs/server.pem",
    "tls_key": "certs/server.key",
    "tls_ca": "certs/ca.pem",
    "tls_verify": "peer",
    "tls_fail_if_no_peer_cert": "true",
    "tls_cert_login_from": "distinguished_name",
}

# What a field needs beside it to be valid (TLS settings mean nothing without a certificate, and so on).
COMPANIONS = {
    "tls_key": {"tls_cert": "certs/server.pem"},
    "tls_ca": {"tls_cert": "certs/server.pem"},
    "tls_verify": {"tls_cert": "certs/server.pem", "tls_ca": "certs/ca.pem"},
    "tls_fail_if_no_peer_cert": {
        "tls_cert": "certs/server.pem",
        "tls_ca": "certs/ca.pem",
        "tls_verify": "peer",
    },
}


def flags_for(name: str) -> list[str]:
    """The flag that sets `name` to its sample, after the flags of its companions."""
    argv = [arg for companion, value in COMPANIONS.get(name, {}).items() for arg in (flag_name(companion), value)]
    return [*argv, flag_name(name), NON_DEFAULT[name]]


def env_for(name: str) -> dict[str, str]:
    companions = {env_name(companion): value for companion, value in COMPANIONS.get(name, {}).items()}
    return {**companions, env_name(name): NON_DEFAULT[name]}


def typed(name: str) -> object:
    field_type = {f.name: type(getattr(Config(), f.name)) for f in dataclasses.fields(Config)}[name]
    if field_type is bool:
        return NON_DEFAULT[name] == "true"
    return field_type(NON_DEFAULT[name])


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "amqpd.toml"
    path.write_text(text)
    return str(path)


def test_every_config_field_has_a_non_default_sample() -> None:
    # Keeps the parametrised tests below honest when a field is added to Config.
    assert set(NON_DEFAULT) == {f.name for f in dataclasses.fields(Config)}


def test_no_flags_no_env_no_file_gives_the_dataclass_defaults() -> None:
    assert load_config([], {}) == Config()


@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_every_field_is_settable_by_flag(name: str) -> None:
    config = load_config(flags_for(name), {})
    assert getattr(config, name) == typed(name)


@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_every_field_is_settable_by_environment(name: str) -> None:
    config = load_config([], env_for(name))
    assert getattr(config, name) == typed(name)


def test_environment_names_are_the_prefixed_upper_case_field_names() -> None:
    assert [env_name(n) for n in ("port", "data_dir", "default_pass")] == [
        "AMQPD_PORT",
        "AMQPD_DATA_DIR",
        "AMQPD_DEFAULT_PASS",
    ]


def test_toml_keys_are_field_names_with_native_types(tmp_path: Path) -> None:
    text = 'port = 5680\ndata_dir = "/var/lib/x"\nshutdown_timeout = 2\nloop = "asyncio"\n'
    config = load_config(["--config", write_toml(tmp_path, text)], {})
    assert (config.port, config.data_dir, config.loop) == (5680, "/var/lib/x", "asyncio")
    assert config.shutdown_timeout == 2.0


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 1001\nheartbeat = 11\nchannel_max = 111\n")
    env = {"AMQPD_PORT": "1002", "AMQPD_HEARTBEAT": "12"}
    config = load_config(["--config", path, "--port", "1003"], env)
    assert config.port == 1003  # flag over env and file
    assert config.heartbeat == 12  # env over file
    assert config.channel_max == 111  # file over default
    assert config.frame_max == Config().frame_max  # default


def test_config_file_can_be_named_by_environment(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 5699\n")
    assert load_config([], {"AMQPD_CONFIG": path}).port == 5699


def test_case_of_log_level_and_loop_does_not_matter() -> None:
    config = load_config(["--log-level", "WARNING"], {"AMQPD_LOOP": "AsyncIO"})
    assert (config.log_level, config.loop) == ("warning", "asyncio")


def test_empty_store_means_the_embedded_default() -> None:
    assert load_config([], {"AMQPD_STORE": ""}).store == ""


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--port", "http"], {}, "--port: expected a port number or off, got 'http'"),
        (["--port", "70000"], {}, "--port must be 0-65535 or off, got 70000"),
        ([], {"AMQPD_PORT": "-1"}, "AMQPD_PORT must be 0-65535 or off, got -1"),
        ([], {"AMQPD_HEARTBEAT": "1.5"}, "AMQPD_HEARTBEAT: expected an integer"),
        (["--frame-max", "1000"], {}, "--frame-max must be 4096-"),
        (["--channel-max", "0"], {}, "--channel-max must be 1-65535"),
        (["--shutdown-timeout", "0"], {}, "--shutdown-timeout must be greater than 0"),
        (["--loop", "trio"], {}, "--loop must be one of auto, uvloop, asyncio, got 'trio'"),
        (["--log-level", "loud"], {}, "--log-level must be one of debug, info"),
        (["--store", "redis://x"], {}, "unsupported store URL 'redis://x'"),
        (["--default-user", ""], {}, "--default-user must not be empty"),
        (["--bogus"], {}, "unrecognized arguments: --bogus (see amqpd --help)"),
        (["--check-timeout", "soon"], {}, "--check-timeout: expected a number"),
    ],
)
def test_bad_values_name_the_setting_and_what_is_accepted(
    argv: list[str], env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(argv, env)
    assert expected in str(info.value)


def test_unknown_toml_key_lists_the_valid_ones(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "prot = 5672\n")
    with pytest.raises(ConfigError, match=r"unknown key 'prot' in config file .*valid keys: host, port"):
        load_config(["--config", path], {})


def test_wrongly_typed_toml_value_names_the_key_and_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = true\n")
    with pytest.raises(ConfigError, match=r"port in .*amqpd.toml: expected a port number or off, got True"):
        load_config(["--config", path], {})


def test_invalid_toml_is_reported_as_such(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(["--config", path], {})


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(["--config", str(tmp_path / "absent.toml")], {})


def test_main_exits_2_with_one_line_for_a_bad_value(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMQPD_PORT", "lots")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err == "amqpd: AMQPD_PORT: expected a port number or off, got 'lots'\n"


def test_main_exits_2_with_one_line_for_an_unknown_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--prot", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--prot" in err and "amqpd --help" in err


def test_version_flag_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("amqpd ")


def test_python_dash_m_broker_help_lists_flags_and_environment() -> None:
    argv = [sys.executable, "-m", "amqpd", "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "--data-dir" in done.stdout and "AMQPD_" in done.stdout


def test_check_flag_exits_0_for_a_healthy_broker(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeBroker() as fake:
        assert main(["--check", fake.url()]) == 0
    assert capsys.readouterr().out.startswith("healthy: ")


def test_check_flag_exits_1_for_an_unreachable_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", f"amqp://guest:guest@127.0.0.1:{free_port()}/", "--check-timeout", "2"]) == 1
    assert "unhealthy: cannot connect" in capsys.readouterr().err


def test_check_without_url_targets_the_configured_broker() -> None:
    with FakeBroker() as fake:
        invocation = parse_invocation(["--check", "--port", str(fake.port)], {"AMQPD_HOST": "0.0.0.0"})
        assert invocation.check_url == ""
        url = check_url_for(invocation.config)
        assert url == f"amqp://guest:guest@127.0.0.1:{fake.port}/"
        assert check(url)[0]


def test_check_url_quotes_credentials_and_names_a_non_default_vhost() -> None:
    config = Config(host="::1", port=5673, default_user="a@b", default_pass="p/q", default_vhost="prod")
    assert check_url_for(config) == "amqp://a%40b:p%2Fq@[::1]:5673/prod"


def test_check_url_with_the_plain_port_off_targets_the_tls_listener() -> None:
    config = Config(port=PORT_OFF, tls_port=5671, tls_cert="server.pem")
    assert check_url_for(config) == "amqps://guest:guest@127.0.0.1:5671/?no_verify_ssl=1"


def test_auto_loop_prefers_uvloop_when_installed() -> None:
    kind, factory = choose_loop("auto")
    assert kind == ("uvloop" if "uvloop" in LOOP_FACTORIES else "asyncio")
    assert (factory is not None) == (kind == "uvloop")


def test_asyncio_loop_uses_the_standard_loop() -> None:
    assert choose_loop("asyncio") == ("asyncio", None)


# ------------------------------------------------------------------------------ the real broker as a process


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_shuts_the_broker_down_and_exits_0(sig: signal.Signals) -> None:
    with AmqpdProcess("--store", "memory://") as broker:
        ok, message = check(broker.url)
        assert ok, message
        assert broker.signal(sig) == 0, broker.log


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_startup_line_names_the_port_and_the_loop(loop: str) -> None:
    if loop not in LOOP_FACTORIES:
        pytest.skip("uvloop is not installed")
    with AmqpdProcess("--store", "memory://", "--loop", loop) as broker:
        assert broker.port > 0
        assert loop in broker.log
        assert broker.signal(signal.SIGTERM) == 0


def test_port_in_use_exits_1_with_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "amqpd",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--store",
                "memory://",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1, done.stderr
    assert f"amqpd: cannot start on 127.0.0.1:{port}:" in done.stderr


def test_a_flow_low_mark_not_below_the_high_mark_is_refused() -> None:
    with pytest.raises(ConfigError, match="flow_low must be below flow_high"):
        parse_invocation(["--flow-high", "100", "--flow-low", "100"], {})


# ------------------------------------------------------------------------------ users, definitions, connection limit


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('loopback_users = ["guest", "admin"]', "guest,admin"),
        ("loopback_users = []", ""),
        ('loopback_users = "none"', "none"),
        ('loopback_users = "guest, admin"', "guest, admin"),
    ],
)
def test_loopback_users_in_toml_is_a_list_or_a_string(tmp_path: Path, toml: str, expected: str) -> None:
    assert load_config(["--config", write_toml(tmp_path, toml + "\n")], {}).loopback_users == expected


@pytest.mark.parametrize(("text", "names"), [("guest,admin", {"guest", "admin"}), ("", set()), ("none", set())])
def test_loopback_users_from_flag_or_environment_reach_the_server(text: str, names: set[str]) -> None:
    from amqpd.broker.server.server import Server

    for config in (load_config(["--loopback-users", text], {}), load_config([], {"AMQPD_LOOPBACK_USERS": text})):
        assert Server(config).access.loopback_users == frozenset(names)


def test_a_toml_list_that_is_not_all_strings_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "loopback_users = [1, 2]\n")
    with pytest.raises(ConfigError, match=r"loopback_users in .*: expected a string, got \[1, 2\]"):
        load_config(["--config", path], {})


def test_a_toml_list_is_refused_for_a_setting_that_takes_one_value(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'default_pass = ["a", "b"]\n')
    with pytest.raises(ConfigError, match=r"default_pass in .*: expected a string, got \['a', 'b'\]"):
        load_config(["--config", path], {})


def test_definitions_and_max_connections_come_from_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'definitions = "/etc/amqpd/defs.json"\nmax_connections = 100\n')
    config = load_config(["--config", path], {})
    assert (config.definitions, config.max_connections) == ("/etc/amqpd/defs.json", 100)


def test_a_negative_connection_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="--max-connections must be at least 0, got -1"):
        load_config(["--max-connections", "-1"], {})


def test_max_connections_becomes_the_servers_connection_limit() -> None:
    from amqpd.broker.server.server import Server

    assert Server(load_config(["--max-connections", "7"], {})).connection_limit == 7
