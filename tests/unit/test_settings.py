from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.domain.limits import OperatorLimits, Tenancy
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


def test_flags_win_over_environment_and_lease_variable_over_pod_namespace(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, CONFIG),
        environ={
            "PA_GRPC_PORT": "9300",
            "POD_NAMESPACE": "keda",
            "PA_LEASE_NAMESPACE": "ops",
            "PA_LOG_LEVEL": "warning",
        },
        overrides={"grpc_port": 9400, "log_level": "error"},
    )
    assert settings.grpc.port == 9400
    assert settings.leader_election.namespace == "ops"
    assert settings.log_level == "error"


def test_prometheus_url_flag_replaces_only_default(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CONFIG), environ={}, overrides={"prometheus_url": "http://127.0.0.1:1"})
    assert {endpoint.name: endpoint.url for endpoint in settings.prometheus}["default"] == "http://127.0.0.1:1"
    assert len(settings.prometheus) == 2


def test_defaults_without_file() -> None:
    settings = load_settings(None, environ={})
    assert settings.prometheus == ()
    assert settings.grpc.port == 9100
    assert settings.actuator.mode == "off"
    assert settings.http.auth.mode == "kubernetes"
    assert settings.limits.operator_limits(placeholders_written=True) == OperatorLimits()


def test_an_empty_section_means_its_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "grpc:\nprometheus:\nlog:\n"), environ={"PA_GRPC_PORT": "9300"})
    assert (settings.grpc.port, settings.grpc.host, settings.prometheus) == (9300, "0.0.0.0", ())


def test_limits_reach_the_core(tmp_path: Path) -> None:
    text = """
limits:
  placeholderNamespaces: [llm, vision]
  maxBufferReplicasPerTarget: 4
  maxBufferReplicasTotal: 10
  allowCustomQueries: false
  tenancy: namespace
"""
    limits = load_settings(write(tmp_path, text), environ={}).limits.operator_limits(placeholders_written=True)
    assert limits == OperatorLimits(
        placeholder_namespaces=frozenset({"llm", "vision"}),
        max_buffer_replicas_per_target=4,
        max_buffer_replicas_total=10,
        allow_custom_queries=False,
        tenancy=Tenancy.NAMESPACE,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("actuator: {mode: off}", "off"),  # YAML 1.1 reads an unquoted off as false
        ("actuator: {mode: 'off'}", "off"),
        ("actuator: {mode: placeholders}", "placeholders"),
    ],
)
def test_actuator_off_unquoted(tmp_path: Path, text: str, expected: str) -> None:
    assert load_settings(write(tmp_path, text), environ={}).actuator.mode == expected


@pytest.mark.parametrize(
    "text",
    [
        "http: {host: 127.0.0.1, auth: {mode: none}}",
        "http: {host: '::1', auth: {mode: none}}",
        "http: {host: localhost, auth: {mode: none}}",
        "http: {host: 0.0.0.0, auth: {mode: none, allowUnauthenticatedRemote: true}}",
    ],
)
def test_unauthenticated_http_on_loopback_or_asked_for_by_name(tmp_path: Path, text: str) -> None:
    assert load_settings(write(tmp_path, text), environ={}).http.auth.mode == "none"


# Every rejected case names the setting's path; the cases come first.
REJECTED = [
    ("grpc: {port: 9100.7}", "grpc.port: Input should be a valid integer (got 9100.7)"),
    ("engine: {fitWorkers: true}", "engine.fitWorkers: Input should be a valid integer (got True)"),
    ("engine: {fitWorkers: 0}", "engine.fitWorkers: Input should be greater than or equal to 1 (got 0)"),
    ("engine: {tickSeconds: 0}", "engine.tickSeconds: Input should be greater than 0 (got 0)"),
    ("engine: {maxTargets: -5}", "engine.maxTargets: Input should be greater than or equal to 1 (got -5)"),
    ("grpc: {warmingWaitSeconds: -1}", "grpc.warmingWaitSeconds: Input should be greater than or equal to 0 (got -1)"),
    ("log: debug", "log: expected a mapping of settings (got 'debug')"),
    ("grpc: 9100", "grpc: expected a mapping of settings (got 9100)"),
    ("log: {level: verbose}", "log.level: Input should be 'debug', 'info', 'warning' or 'error' (got 'verbose')"),
    ("grpc: {port: abc}", "grpc.port: Input should be a valid integer (got 'abc')"),
    ("grpc: {port: '9100'}", "grpc.port: Input should be a valid integer (got '9100')"),
    ("grpc: {port: 70000}", "grpc.port: Input should be less than or equal to 65535 (got 70000)"),
    ("grpc: {prot: 1}", "grpc.prot: unknown setting"),
    ("grpc: {server: grpcio}", "grpc.server: unknown setting"),
    ("promethus: {}", "promethus: unknown setting"),
    ("prometheus: {endpoints: [{name: a}]}", "prometheus.endpoints[0].url: Field required"),
    ("prometheus: {endpoints: [{name: a, url: 'file:///etc/passwd'}]}", "prometheus.endpoints[0]: prometheus endpoint"),
    ("prometheus: {endpoints: [{name: a, url: 'http://u:pw@host:9090'}]}", "credentials in the url are not allowed"),
    ("prometheus: {endpoints: [{name: a, url: 'http://x'}, {name: a, url: 'http://y'}]}", "names must be unique"),
    ("prometheus: {endpoints: [{name: a, url: 'http://x', retries: 1.5}]}", "prometheus.endpoints[0].retries"),
    ("prometheus: {endpoints: [{name: A_b, url: 'http://x'}]}", "prometheus.endpoints[0].name: String should match"),
    ("actuator: {mode: yolo}", "actuator.mode: Input should be 'off', 'placeholders', 'capacitybuffer' or 'auto'"),
    ("leaderElection: {enabled: maybe}", "leaderElection.enabled: Input should be a valid boolean (got 'maybe')"),
    ("leaderElection: {enabled: 1}", "leaderElection.enabled: Input should be a valid boolean (got 1)"),
    ("leaderElection: {leaseDurationSeconds: 5, renewPeriodSeconds: 5}", "leaderElection: renewPeriodSeconds must"),
    ("http: {auth: {mode: none}}", "http: auth.mode none on host '0.0.0.0' (beyond loopback) needs"),
    ("http: {auth: {mode: basic}}", "http.auth.mode: Input should be 'kubernetes' or 'none'"),
    ("grpc: {tlsCertFile: /a}", "grpc: tlsCertFile and tlsKeyFile must be set together"),
    ("grpc: {tlsKeyFile: /a}", "grpc: tlsCertFile and tlsKeyFile must be set together"),
    ("grpc: {clientCaFile: /a}", "grpc: clientCaFile (mTLS) needs tlsCertFile and tlsKeyFile"),
    ("engine: {fullCollectionSeconds: -1}", "engine.fullCollectionSeconds: Input should be greater than or equal to 0"),
    ("limits: {placeholderNamespaces: [Bad_Name]}", "limits.placeholderNamespaces[0]: String should match"),
    ("limits: {maxBufferReplicasPerTarget: -1}", "limits.maxBufferReplicasPerTarget: Input should be greater"),
    ("limits: {tenancy: label}", "limits.tenancy: Input should be 'none' or 'namespace' (got 'label')"),
    ("limits: {allowCustomQueries: 'no'}", "limits.allowCustomQueries: Input should be a valid boolean (got 'no')"),
    ("clock: {source: replay}", "clock: source replay needs replay.start and replay.wallOrigin (epoch seconds)"),
    ("clock: {source: replay, replay: {start: 1}}", "clock: source replay needs replay.wallOrigin"),
    ("clock: {replay: {speed: 288}}", "clock: replay.speed set but source is system; set source: replay"),
    ("clock: {source: wall}", "clock.source: Input should be 'system' or 'replay' (got 'wall')"),
    ("clock: {source: replay, replay: {start: 1, wallOrigin: 2, speed: 0}}", "clock.replay.speed: Input should be"),
    ("clock: {source: replay, replay: {start: today, wallOrigin: 2}}", "clock.replay.start: Input should be a valid"),
    (
        "clock: {source: replay, replay: {start: 1, wallOrigin: 2}}\nactuator: {mode: placeholders}",
        "clock.source replay needs actuator.mode off (got 'placeholders')",
    ),
    ("- a\n- b", "top level must be a mapping"),
    ("a: [", "invalid YAML"),
]


@pytest.mark.parametrize(("text", "fragment"), REJECTED, ids=[text for text, _ in REJECTED])
def test_bad_configuration_names_the_setting(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    assert fragment in str(caught.value)


def test_every_bad_setting_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "grpc: {port: 9100.7}\nengine: {fitWorkers: 0, tickSeconds: 0}"), environ={})
    assert [part.split(":")[0] for part in str(caught.value).split("; ")] == [
        "grpc.port",
        "engine.fitWorkers",
        "engine.tickSeconds",
    ]


@pytest.mark.parametrize(
    ("environ", "overrides", "fragment"),
    [
        ({"PA_GRPC_PORT": "9100.7"}, {}, "grpc.port (from environment PA_GRPC_PORT): '9100.7'"),
        ({"PA_HTTP_PORT": "http"}, {}, "http.port (from environment PA_HTTP_PORT): 'http'"),
        ({"PA_GRPC_PORT": "70000"}, {}, "grpc.port: Input should be less than or equal to 65535"),
        ({"PA_LOG_LEVEL": "verbose"}, {}, "log.level (from environment PA_LOG_LEVEL): 'verbose'"),
        ({"POD_NAMESPACE": "Not-A-Label"}, {}, "leaderElection.namespace: String should match"),
        ({"PA_PROMETHEUS_URL": "ftp://x"}, {}, "prometheus.endpoints[0]: prometheus endpoint 'default'"),
        ({}, {"http_port": -1}, "http.port: Input should be greater than or equal to 0"),
        ({}, {"log_format": "xml"}, "log.format (from flag log_format): 'xml'"),
    ],
)
def test_bad_environment_or_flag_names_its_source(
    environ: dict[str, str], overrides: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ=environ, overrides=overrides)
    assert fragment in str(caught.value)


def test_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(ConfigError, match="unknown override 'grpc_server'"):
        load_settings(None, environ={}, overrides={"grpc_server": "grpcio"})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(str(tmp_path / "absent.yaml"), environ={})


def test_the_replay_clock_is_asked_for_by_name(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).clock.source == "system"
    text = "clock: {source: replay, replay: {start: 1783987200, speed: 288, wallOrigin: 1794000000.5}}"
    replay = load_settings(write(tmp_path, text), environ={}).clock.replay
    assert (replay.start, replay.speed, replay.wall_origin) == (1783987200.0, 288.0, 1794000000.5)


def test_settings_are_frozen() -> None:
    settings = load_settings(None, environ={})
    with pytest.raises(ValueError, match="frozen"):
        settings.grpc.port = 1
