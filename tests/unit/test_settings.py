from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.settings import ConfigError, load_settings

CONFIG = """
prometheus:
  endpoints:
    - name: default
      url: http://prometheus:9090
      timeoutSeconds: 2
    - name: gpu
      url: https://thanos:10902
      bearerTokenFile: /var/run/token
grpc:
  port: 9200
  tlsCertFile: /tls/tls.crt
  tlsKeyFile: /tls/tls.key
leaderElection:
  enabled: true
log:
  level: debug
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, CONFIG),
        environ={"PA_GRPC_PORT": "9300", "POD_NAMESPACE": "keda"},
        overrides={"http_port": 0},
    )
    assert [endpoint.name for endpoint in settings.prometheus] == ["default", "gpu"]
    assert settings.prometheus[0].timeout_seconds == 2
    assert settings.prometheus[1].bearer_token_file == "/var/run/token"
    assert settings.grpc.port == 9300
    assert settings.grpc.tls_cert_file == "/tls/tls.crt"
    assert settings.http.port == 0
    assert settings.leader_election.enabled
    assert settings.leader_election.namespace == "keda"
    assert settings.log_level == "debug"


def test_prometheus_url_flag_replaces_only_default(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CONFIG), environ={}, overrides={"prometheus_url": "http://127.0.0.1:1"})
    assert {endpoint.name: endpoint.url for endpoint in settings.prometheus}["default"] == "http://127.0.0.1:1"
    assert len(settings.prometheus) == 2


def test_defaults_without_file() -> None:
    settings = load_settings(None, environ={})
    assert settings.prometheus == ()
    assert settings.grpc.port == 9100
    assert settings.actuator.mode == "off"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("grpc: {port: abc}", "grpc.port: 'abc' is not a valid int"),
        ("grpc: {prot: 1}", "grpc.prot: unknown setting"),
        ("promethus: {}", "promethus: unknown setting"),
        ("prometheus: {endpoints: [{name: a}]}", "prometheus.endpoints[0]: needs 'name' and 'url'"),
        ("prometheus: {endpoints: [{name: a, url: 'file:///etc/passwd'}]}", "must start with http"),
        ("prometheus: {endpoints: [{name: a, url: 'http://x'}, {name: a, url: 'http://y'}]}", "unique"),
        ("grpc: {port: 70000}", "not a TCP port"),
        ("actuator: {mode: yolo}", "actuator.mode"),
        ("leaderElection: {enabled: maybe}", "not a valid bool"),
        ("- a\n- b", "top level must be a mapping"),
        ("a: [", "invalid YAML"),
    ],
)
def test_bad_configuration_names_the_setting(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        load_settings(write(tmp_path, text), environ={})
    assert fragment in str(caught.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(str(tmp_path / "absent.yaml"), environ={})


def test_endpoint_validation_becomes_config_error(tmp_path: Path) -> None:
    text = "prometheus: {endpoints: [{name: a, url: 'http://user:pw@host:9090'}]}"
    with pytest.raises(ConfigError, match=r"prometheus.endpoints\[0\]: .*credentials"):
        load_settings(write(tmp_path, text), environ={})


@pytest.mark.parametrize(
    "grpc",
    ["{tlsCertFile: /a}", "{tlsKeyFile: /a}", "{clientCaFile: /a}"],
)
def test_tls_files_must_come_together(tmp_path: Path, grpc: str) -> None:
    with pytest.raises(ConfigError, match="grpc"):
        load_settings(write(tmp_path, f"grpc: {grpc}"), environ={})
