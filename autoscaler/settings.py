"""The daemon's own configuration: YAML file, then environment, then flags.

Everything a target may not choose lives here: Prometheus addresses and credentials,
listen addresses, TLS material, leader election, the actuator, and the limits a
ScaledObject's scalerMetadata must stay within. scalerMetadata can only pick a
configured Prometheus endpoint by name, never supply an address.

The settings are a strict pydantic model tree: keys are camelCase, an unknown key or a
value of the wrong type (`port: 9100.7`, `fitWorkers: true`) is an error, and every
error names the setting's path. `autoscaler config schema` prints the JSON Schema.

Precedence: command-line flags > environment (`PA_*`) > file > defaults.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from autoscaler.adapters.prometheus import PrometheusEndpoint
from autoscaler.domain.limits import OperatorLimits, Tenancy

MAX_CONFIG_BYTES = 1 << 20
MAX_PROMETHEUS_ENDPOINTS = 32
_DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class ConfigError(ValueError):
    """The daemon configuration is invalid; the message names the setting."""


def _as_tuple(value: Any) -> Any:
    """YAML gives lists; the settings keep tuples so a loaded configuration cannot change."""
    return tuple(value) if isinstance(value, list) else value


def _unique_names(endpoints: tuple[PrometheusEndpointSettings, ...]) -> tuple[PrometheusEndpointSettings, ...]:
    names = [endpoint.name for endpoint in endpoints]
    if len(set(names)) != len(names):
        raise ValueError("endpoint names must be unique")
    return endpoints


def _yaml_off(value: Any) -> Any:
    """YAML 1.1 reads an unquoted `off` as false; for the actuator that can only mean "off"."""
    return "off" if value is False else value


Port = Annotated[int, Field(ge=0, le=65535, description="TCP port; 0 picks a free one.")]
Endpoints = Annotated[
    tuple["PrometheusEndpointSettings", ...],
    BeforeValidator(_as_tuple),
    AfterValidator(_unique_names),
    Field(max_length=MAX_PROMETHEUS_ENDPOINTS),
]
Namespaces = Annotated[
    tuple[Annotated[str, Field(pattern=_DNS_LABEL)], ...], BeforeValidator(_as_tuple), Field(max_length=10_000)
]


class _Section(BaseModel):
    """Strict, frozen, camelCase keys; an unknown key is an error; an empty section means its defaults."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_is_defaults(cls, data: Any) -> Any:
        # `grpc:` with every line under it commented out reads as null.
        return {} if data is None else data


class PrometheusEndpointSettings(_Section):
    """One Prometheus server; the fields of `PrometheusEndpoint`, which checks the URL and TLS rules."""

    name: str = Field(pattern=_DNS_LABEL)
    """Referenced by the `prometheus` scalerMetadata key."""
    url: str = Field(max_length=2048)
    """http(s)://host[:port][/path], without credentials, query or fragment."""
    bearer_token_file: str | None = None
    """File holding the bearer token (read on every request, so a rotated token is picked up)."""
    ca_file: str | None = None
    """CA bundle for an https url."""
    insecure_skip_verify: bool = False
    """Skip TLS verification of an https url; never in production."""
    timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    """Per query."""
    retries: int = Field(default=3, ge=0, le=10)
    """Attempts after the first one."""
    backoff_seconds: float = Field(default=0.2, ge=0)
    """First wait between retries; it doubles, with jitter, up to maxBackoffSeconds."""
    max_backoff_seconds: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _endpoint_rules(self) -> PrometheusEndpointSettings:
        self.endpoint()  # its ValueError names what is wrong; pydantic places it at this endpoint's path
        return self

    def endpoint(self) -> PrometheusEndpoint:
        return PrometheusEndpoint(**self.model_dump())


class PrometheusSettings(_Section):
    endpoints: Endpoints = ()
    """The Prometheus servers the daemon queries; ScaledObjects pick one by name (default: "default")."""


class GrpcSettings(_Section):
    host: str = "0.0.0.0"
    """Listen address of the KEDA external scaler (gRPC)."""
    port: Port = 9100
    tls_cert_file: str | None = None
    """Server certificate (PEM); set together with tlsKeyFile."""
    tls_key_file: str | None = None
    """Private key of tlsCertFile (PEM)."""
    client_ca_file: str | None = None
    """CA that client certificates must chain to (mTLS); needs tlsCertFile and tlsKeyFile."""
    warming_wait_seconds: float = Field(default=2.0, ge=0, le=60)
    """How long a call on a target without a first plan waits before UNAVAILABLE."""

    @model_validator(mode="after")
    def _tls_files_together(self) -> GrpcSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tlsCertFile and tlsKeyFile must be set together")
        if self.client_ca_file and not self.tls_cert_file:
            raise ValueError("clientCaFile (mTLS) needs tlsCertFile and tlsKeyFile")
        return self


class HttpAuthSettings(_Section):
    mode: Literal["kubernetes", "none"] = "kubernetes"
    """kubernetes: TokenReview + SubjectAccessReview on the API and /metrics; none: no authentication."""
    allow_unauthenticated_remote: bool = False
    """Must be true for mode none on an address beyond loopback: an open port has to be asked for by name."""
    authenticate_loopback: bool = False
    """Mode kubernetes on a loopback address too, where otherwise only processes in the pod could connect."""


class HttpLimitsSettings(_Section):
    max_connections: int = Field(default=256, ge=1, le=100_000)
    """Open connections to the HTTP port; one more is closed at once (they share the open-file limit with gRPC)."""
    idle_timeout_seconds: float = Field(default=15.0, gt=0, le=3600)
    """A connection idle, or still sending its request headers, for this long is closed."""
    write_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    """A large response (over 64 KiB) not written within this time is dropped with its connection."""
    max_streaming_responses: int = Field(default=8, ge=1, le=1024)
    """Large responses being written at once; more get 503 with Retry-After."""


class HttpSettings(_Section):
    host: str = "0.0.0.0"
    """Listen address of the JSON API, the page and /metrics."""
    port: Port = 8080
    auth: HttpAuthSettings = HttpAuthSettings()
    limits: HttpLimitsSettings = HttpLimitsSettings()

    @property
    def authenticated(self) -> bool:
        """Whether requests need a Kubernetes bearer token: mode kubernetes beyond loopback (or asked for on it)."""
        return self.auth.mode == "kubernetes" and (self.auth.authenticate_loopback or not _is_loopback(self.host))

    @model_validator(mode="after")
    def _open_port_asked_for(self) -> HttpSettings:
        if self.auth.mode == "none" and not _is_loopback(self.host) and not self.auth.allow_unauthenticated_remote:
            raise ValueError(
                f"auth.mode none on host {self.host!r} (beyond loopback) needs auth.allowUnauthenticatedRemote: true"
            )
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LeaderElectionSettings(_Section):
    enabled: bool = False
    """Elect one writer among the daemon's replicas with a Lease; off, this replica always writes."""
    lease_name: str = Field(default="predictive-autoscaler", min_length=1, max_length=253)
    """Name of the Lease object."""
    namespace: str = Field(default="default", pattern=_DNS_LABEL)
    """Namespace of the Lease (POD_NAMESPACE when set)."""
    lease_duration_seconds: float = Field(default=15.0, gt=0, le=300)
    """How long a crashed leader blocks a takeover."""
    renew_period_seconds: float = Field(default=5.0, gt=0, le=300)
    """How often the leader renews; shorter than leaseDurationSeconds."""

    @model_validator(mode="after")
    def _renews_within_lease(self) -> LeaderElectionSettings:
        if self.renew_period_seconds >= self.lease_duration_seconds:
            raise ValueError("renewPeriodSeconds must be shorter than leaseDurationSeconds")
        return self


class ActuatorSettings(_Section):
    mode: Annotated[Literal["off", "placeholders", "capacitybuffer", "auto"], BeforeValidator(_yaml_off)] = "off"
    """placeholders | capacitybuffer | auto (CapacityBuffer where served) | off (never write)."""
    priority_class_name: str = Field(default="predictive-autoscaler-placeholder", min_length=1, max_length=253)
    """PriorityClass of the placeholder pods, so real pods preempt them."""
    priority_value: int = Field(default=-10, ge=-2_147_483_648, le=1_000_000_000)
    """Its value (below every real workload's)."""
    pause_image: str = Field(default="registry.k8s.io/pause:3.10", min_length=1)
    """Image the placeholder pods run."""
    shadow: bool = False
    """Plan and report what would be written, but write nothing."""
    kubeconfig: str | None = None
    """Outside a pod: the kubeconfig file; in a pod the service account is used."""


class EngineTuning(_Section):
    fit_workers: int = Field(default=1, ge=1, le=64)
    """Processes that refit models; each takes up to a core while it fits."""
    fit_in_process: bool = True
    """Refit in worker processes (true) or in the event loop's thread pool (false)."""
    tick_seconds: float = Field(default=1.0, gt=0, le=60)
    """How often the engine looks for due collections and refits."""
    max_targets: int = Field(default=10_000, ge=1, le=100_000)
    """Targets one daemon tracks; more are refused with RESOURCE_EXHAUSTED."""
    full_collection_seconds: float = Field(default=120.0, ge=0)
    """Period of the daemon's full garbage collections (autoscaler/gc_pacing.py); CPython collects only
    generation 0 on its own in between. 0 leaves every generation to CPython."""


class LimitsSettings(_Section):
    """What a ScaledObject's scalerMetadata may ask for; more is INVALID_ARGUMENT naming the key and the limit."""

    placeholder_namespaces: Namespaces = ()
    """Namespaces whose ScaledObjects may have placeholders written (in their own namespace); default none.
    Binds only while the actuator is on: with it off nothing is written."""
    max_buffer_replicas_per_target: int = Field(default=16, ge=0, le=10_000)
    """The largest maxBufferReplicas a ScaledObject may ask for."""
    max_buffer_replicas_total: int = Field(default=64, ge=0, le=100_000)
    """Placeholder replicas across all workloads; above it every buffer is cut to a fair share."""
    allow_custom_queries: bool = True
    """false: only presets; query, the per-kind queries and replicasQuery are refused."""
    tenancy: Literal["none", "namespace"] = "none"
    """namespace: every selector of every query gets namespace="<the ScaledObject's namespace>"."""

    def operator_limits(self, *, placeholders_written: bool) -> OperatorLimits:
        """The pure core's view of these limits; `placeholders_written` is whether the actuator is on."""
        return OperatorLimits(
            placeholder_namespaces=frozenset(self.placeholder_namespaces),
            placeholders_written=placeholders_written,
            max_buffer_replicas_per_target=self.max_buffer_replicas_per_target,
            max_buffer_replicas_total=self.max_buffer_replicas_total,
            allow_custom_queries=self.allow_custom_queries,
            tenancy=Tenancy(self.tenancy),
        )


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written."""
    format: Literal["json", "text"] = "json"
    """json: one object per line; text: for a terminal."""


class ReplayClockSettings(_Section):
    """A virtual timeline: `start` at wall time `wallOrigin`, then `speed` virtual seconds per wall second."""

    start: float | None = None
    """Virtual time (epoch seconds) at wallOrigin: where in the recorded data the replay begins."""
    speed: float = Field(default=1.0, gt=0, le=100_000)
    """Virtual seconds per wall second; 288 replays a day in five minutes."""
    wall_origin: float | None = None
    """Wall time (epoch seconds) at which virtual time is start. Daemons given the same
    three values share one timeline, a restarted one included."""


class ClockSettings(_Section):
    source: Literal["system", "replay"] = "system"
    """system: the wall clock. replay: the virtual timeline of clock.replay, for a dry run of
    what the daemon would have done on data already in Prometheus (needs actuator.mode off)."""
    replay: ReplayClockSettings = ReplayClockSettings()

    @model_validator(mode="after")
    def _replay_asked_for_by_name(self) -> ClockSettings:
        given = self.replay.model_fields_set
        if self.source == "system" and given:
            raise ValueError(f"replay.{_camel_list(given)} set but source is system; set source: replay to use them")
        missing = [name for name in ("start", "wall_origin") if getattr(self.replay, name) is None]
        if self.source == "replay" and missing:
            raise ValueError(f"source replay needs replay.{_camel_list(missing)} (epoch seconds)")
        return self


def _camel_list(names: Iterable[str]) -> str:
    return " and replay.".join(to_camel(name) for name in sorted(names))


class Settings(_Section):
    """The whole daemon configuration (the YAML file's top level)."""

    prometheus_settings: PrometheusSettings = Field(default=PrometheusSettings(), alias="prometheus")
    grpc: GrpcSettings = GrpcSettings()
    http: HttpSettings = HttpSettings()
    leader_election: LeaderElectionSettings = LeaderElectionSettings()
    actuator: ActuatorSettings = ActuatorSettings()
    engine: EngineTuning = EngineTuning()
    limits: LimitsSettings = LimitsSettings()
    log: LogSettings = LogSettings()
    clock: ClockSettings = ClockSettings()

    @model_validator(mode="after")
    def _replay_writes_nothing(self) -> Settings:
        if self.clock.source == "replay" and self.actuator.mode != "off":
            # Placeholders sized for a recorded day have no place in today's cluster.
            raise ValueError(f"clock.source replay needs actuator.mode off (got {self.actuator.mode!r})")
        return self

    @property
    def prometheus(self) -> tuple[PrometheusEndpoint, ...]:
        return tuple(endpoint.endpoint() for endpoint in self.prometheus_settings.endpoints)

    @property
    def log_level(self) -> str:
        return self.log.level

    @property
    def log_format(self) -> str:
        return self.log.format


# Flat overrides (flags and PA_* variables) and the setting each one sets.
_OVERRIDE_PATHS: Mapping[str, tuple[str, ...]] = {
    "grpc_port": ("grpc", "port"),
    "grpc_host": ("grpc", "host"),
    "http_port": ("http", "port"),
    "http_host": ("http", "host"),
    "lease_namespace": ("leaderElection", "namespace"),
    "log_level": ("log", "level"),
    "log_format": ("log", "format"),
}
_ENVIRONMENT = {
    "PA_PROMETHEUS_URL": "prometheus_url",
    "PA_GRPC_PORT": "grpc_port",
    "PA_HTTP_PORT": "http_port",
    "PA_LOG_LEVEL": "log_level",
    "PA_LOG_FORMAT": "log_format",
    "PA_LEASE_NAMESPACE": "lease_namespace",
}


def load_settings(
    path: str | None = None, *, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Read the file (if any), apply PA_* environment variables, then flag overrides."""
    raw = read_config_file(path) if path else {}
    environ = os.environ if environ is None else environ
    # POD_NAMESPACE (the downward API) first, so PA_LEASE_NAMESPACE set by hand wins over it.
    for variable, name in (("POD_NAMESPACE", "lease_namespace"), *_ENVIRONMENT.items()):
        if environ.get(variable):
            _apply_override(raw, name, environ[variable], source=f"environment {variable}")
    for name, value in (overrides or {}).items():
        if value is not None:
            _apply_override(raw, name, value, source=f"flag {name}")
    return validate_settings(raw)


def read_config_file(path: str) -> dict[str, Any]:
    """The YAML file's top-level mapping, or a ConfigError naming the file."""
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
    return loaded


def validate_settings(raw: Mapping[str, Any]) -> Settings:
    """The settings tree from the file's mapping; a ConfigError lists every bad setting by path."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as error:
        raise ConfigError("; ".join(_describe(item) for item in error.errors(include_url=False))) from None


def settings_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration file (camelCase keys, as written in YAML)."""
    return Settings.model_json_schema(by_alias=True)


def _describe(item: Mapping[str, Any]) -> str:
    path = ""
    for part in item["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = str(item["msg"]).removeprefix("Value error, ")
    if item["type"] == "extra_forbidden":
        message = "unknown setting"
    elif item["type"] in {"model_type", "dict_type"}:
        message = "expected a mapping of settings"
    if item["type"] != "extra_forbidden" and isinstance(item.get("input"), str | int | float | bool):
        message += f" (got {_shortened(repr(item['input']))})"
    return f"{path or '(top level)'}: {message}"


def _shortened(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


def _apply_override(raw: dict[str, Any], name: str, value: Any, *, source: str) -> None:
    """Set one flat override in the raw tree, converting text the way its setting's type reads it."""
    if name == "prometheus_url":
        section = _child(raw, "prometheus")
        if isinstance(section, dict):
            endpoints = section.get("endpoints") or []
            others = [item for item in endpoints if not (isinstance(item, Mapping) and item.get("name") == "default")]
            section["endpoints"] = [{"name": "default", "url": str(value)}, *others]
        return
    if name not in _OVERRIDE_PATHS:
        raise ConfigError(f"unknown override {name!r}")
    *parents, leaf = _OVERRIDE_PATHS[name]
    node = raw
    for part in parents:
        child = _child(node, part)
        if not isinstance(child, dict):
            return  # the file's own value is not a mapping; validation reports it by path
        node = child
    node[leaf] = _convert(value, _OVERRIDE_PATHS[name], source=source)


def _child(node: dict[str, Any], key: str) -> Any:
    """The section under `key`, created when absent or empty (null)."""
    if node.get(key) is None:
        node[key] = {}
    return node[key]


def _convert(value: Any, path: tuple[str, ...], *, source: str) -> Any:
    """Text from a flag or variable becomes the setting's type (lax: "9300" is a port, "9100.7" is not)."""
    model: type[BaseModel] = Settings
    for part in path[:-1]:
        model = _field(model, part).annotation
    field = _field(model, path[-1])
    try:
        return TypeAdapter(field.annotation).validate_python(value, strict=False)
    except ValidationError as error:
        reason = error.errors(include_url=False)[0]["msg"]
        raise ConfigError(f"{'.'.join(path)} (from {source}): {value!r}: {reason}") from None


def _field(model: type[BaseModel], alias: str) -> Any:
    return next(field for name, field in model.model_fields.items() if (field.alias or name) == alias)
