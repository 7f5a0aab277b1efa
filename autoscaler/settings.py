"""The daemon's own configuration: YAML file, then environment, then flags.

Everything a target may not choose lives here: Prometheus addresses and credentials,
listen addresses, TLS material, leader election, the actuator. scalerMetadata can only
pick a configured Prometheus endpoint by name, never supply an address.

Precedence: command-line flags > environment (`PA_*`) > file > defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from autoscaler.adapters.prometheus import PrometheusEndpoint

MAX_CONFIG_BYTES = 1 << 20


class ConfigError(ValueError):
    """The daemon configuration is invalid; the message names the setting."""


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    host: str = "0.0.0.0"
    port: int = 9100
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    client_ca_file: str | None = None
    warming_wait_seconds: float = 2.0
    server: str = "builtin"  # builtin (the lean HTTP/2 server) | grpcio (grpc.aio)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = "0.0.0.0"
    port: int = 8080


@dataclass(frozen=True, slots=True)
class LeaderElectionSettings:
    enabled: bool = False
    lease_name: str = "predictive-autoscaler"
    namespace: str = "default"
    lease_duration_seconds: float = 15.0
    renew_period_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class ActuatorSettings:
    mode: str = "off"  # off | placeholders | capacitybuffer | auto
    priority_class_name: str = "predictive-autoscaler-placeholder"
    priority_value: int = -10
    pause_image: str = "registry.k8s.io/pause:3.10"
    shadow: bool = False
    kubeconfig: str | None = None


@dataclass(frozen=True, slots=True)
class EngineTuning:
    fit_workers: int = 1
    fit_in_process: bool = True
    tick_seconds: float = 1.0
    max_targets: int = 10_000
    full_collection_seconds: float = 120.0
    """Period of the daemon's garbage collections (autoscaler/gc_pacing.py); 0 leaves them to CPython."""


@dataclass(frozen=True, slots=True)
class Settings:
    prometheus: tuple[PrometheusEndpoint, ...] = ()
    grpc: GrpcSettings = field(default_factory=GrpcSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    leader_election: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)
    actuator: ActuatorSettings = field(default_factory=ActuatorSettings)
    engine: EngineTuning = field(default_factory=EngineTuning)
    log_level: str = "info"
    log_format: str = "json"


def _snake(name: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in name)


def _section(cls: type[Any], raw: Any, path: str) -> Any:
    """Build a settings dataclass from a camelCase mapping, naming any bad key."""
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping")
    known = {item.name: item for item in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = _snake(str(key))
        if name not in known:
            raise ConfigError(f"{path}.{key}: unknown setting; known: {', '.join(sorted(known))}")
        values[name] = _coerce(value, _default_of(known[name]), f"{path}.{key}")
    return cls(**values)


def _default_of(item: Field[Any]) -> Any:
    """A field's default, or an empty string for a required (string) field."""
    if item.default is not MISSING:
        return item.default
    if item.default_factory is not MISSING:
        return item.default_factory()
    return ""


def _coerce(value: Any, default: Any, path: str) -> Any:
    if default is None or value is None:
        return value if value is None else str(value)
    target_type = type(default)
    try:
        if target_type is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(value)
            return text in {"true", "1", "yes"}
        return target_type(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: {value!r} is not a valid {target_type.__name__}") from None


def _endpoints(raw: Any) -> tuple[PrometheusEndpoint, ...]:
    if raw is None:
        return ()
    endpoints = raw.get("endpoints") if isinstance(raw, Mapping) else None
    if not isinstance(endpoints, list):
        raise ConfigError("prometheus.endpoints: expected a list of {name, url, ...}")
    result: list[PrometheusEndpoint] = []
    for index, item in enumerate(endpoints):
        path = f"prometheus.endpoints[{index}]"
        if not isinstance(item, Mapping) or "name" not in item or "url" not in item:
            raise ConfigError(f"{path}: needs 'name' and 'url'")
        url = str(item["url"])
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{path}.url: must start with http:// or https://")
        try:
            result.append(_section(PrometheusEndpoint, {**item, "name": str(item["name"]), "url": url}, path))
        except ConfigError:
            raise
        except ValueError as error:  # the endpoint's own validation (URL shape, TLS, retries)
            raise ConfigError(f"{path}: {error}") from None
    names = [endpoint.name for endpoint in result]
    if len(set(names)) != len(names):
        raise ConfigError("prometheus.endpoints: endpoint names must be unique")
    return tuple(result)


def load_settings(
    path: str | None = None, *, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Read the file (if any), apply PA_* environment variables, then flag overrides."""
    raw: dict[str, Any] = {}
    if path:
        file = Path(path)
        try:
            if file.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
            loaded = yaml.safe_load(file.read_text()) or {}
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML: {error}") from error
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        raw = loaded
    known_top = {"prometheus", "grpc", "http", "leaderElection", "actuator", "engine", "log"}
    for key in raw:
        if key not in known_top:
            raise ConfigError(f"{key}: unknown setting; known: {', '.join(sorted(known_top))}")
    log = raw.get("log") or {}
    settings = Settings(
        prometheus=_endpoints(raw.get("prometheus")),
        grpc=_section(GrpcSettings, raw.get("grpc"), "grpc"),
        http=_section(HttpSettings, raw.get("http"), "http"),
        leader_election=_section(LeaderElectionSettings, raw.get("leaderElection"), "leaderElection"),
        actuator=_section(ActuatorSettings, raw.get("actuator"), "actuator"),
        engine=_section(EngineTuning, raw.get("engine"), "engine"),
        log_level=str(log.get("level", "info")),
        log_format=str(log.get("format", "json")),
    )
    settings = _apply_environment(settings, os.environ if environ is None else environ)
    return _apply_overrides(settings, overrides or {})


def _apply_environment(settings: Settings, environ: Mapping[str, str]) -> Settings:
    overrides: dict[str, Any] = {}
    mapping = {
        "PA_PROMETHEUS_URL": "prometheus_url",
        "PA_GRPC_PORT": "grpc_port",
        "PA_GRPC_SERVER": "grpc_server",
        "PA_HTTP_PORT": "http_port",
        "PA_LOG_LEVEL": "log_level",
        "PA_LOG_FORMAT": "log_format",
        "PA_LEASE_NAMESPACE": "lease_namespace",
    }
    for variable, name in mapping.items():
        if environ.get(variable):
            overrides[name] = environ[variable]
    if environ.get("POD_NAMESPACE") and "lease_namespace" not in overrides:
        overrides["lease_namespace"] = environ["POD_NAMESPACE"]
    return _apply_overrides(settings, overrides)


_SECTION_OVERRIDES = {
    "grpc_port": ("grpc", "port"),
    "grpc_host": ("grpc", "host"),
    "grpc_server": ("grpc", "server"),
    "http_port": ("http", "port"),
    "http_host": ("http", "host"),
    "lease_namespace": ("leader_election", "namespace"),
}
ACTUATOR_MODES = ("off", "placeholders", "capacitybuffer", "auto")
GRPC_SERVERS = ("builtin", "grpcio")


def _apply_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """Flat overrides from flags or environment: prometheus_url, grpc_port, http_port, ..."""
    for name, value in overrides.items():
        if value is None:
            continue
        if name == "prometheus_url":
            others = tuple(endpoint for endpoint in settings.prometheus if endpoint.name != "default")
            default = PrometheusEndpoint(name="default", url=str(value))
            settings = replace(settings, prometheus=(default, *others))
        elif name in _SECTION_OVERRIDES:
            section_name, attribute = _SECTION_OVERRIDES[name]
            section = getattr(settings, section_name)
            coerced = _coerce(value, getattr(section, attribute), name)
            settings = replace(settings, **{section_name: replace(section, **{attribute: coerced})})
        elif name == "log_level":
            settings = replace(settings, log_level=str(value))
        elif name == "log_format":
            settings = replace(settings, log_format=str(value))
        else:
            raise ConfigError(f"unknown override {name!r}")
    for port_name, port in (("grpc.port", settings.grpc.port), ("http.port", settings.http.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{port_name}: {port} is not a TCP port")
    grpc = settings.grpc
    if bool(grpc.tls_cert_file) != bool(grpc.tls_key_file):
        raise ConfigError("grpc.tlsCertFile and grpc.tlsKeyFile must be set together")
    if grpc.client_ca_file and not grpc.tls_cert_file:
        raise ConfigError("grpc.clientCaFile (mTLS) needs grpc.tlsCertFile and grpc.tlsKeyFile")
    if grpc.server not in GRPC_SERVERS:
        raise ConfigError(f"grpc.server: {grpc.server!r} is not one of {', '.join(GRPC_SERVERS)}")
    if settings.actuator.mode not in ACTUATOR_MODES:
        modes = ", ".join(ACTUATOR_MODES)
        raise ConfigError(f"actuator.mode: {settings.actuator.mode!r} is not one of {modes}")
    if not settings.engine.full_collection_seconds >= 0:
        raise ConfigError("engine.fullCollectionSeconds: must be 0 (CPython's own pacing) or a period in seconds")
    return settings
