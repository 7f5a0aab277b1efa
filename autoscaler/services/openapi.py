"""The hand-written OpenAPI 3.0 document of the inspection API (served at /openapi.json).

Limits on query parameters live here so the document and the validation in
`http_api` cannot disagree.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

DEFAULT_HISTORY_POINTS = 720
MAX_HISTORY_POINTS = 20_000
MAX_QUERY_VALUE_LENGTH = 12
REF = "#/components/schemas/"


def _ref(name: str) -> Schema:
    return {"$ref": REF + name}


# OpenAPI 3.0 ignores `nullable` beside a `$ref` (and under `allOf` the referenced schema
# still rejects null), so a nullable object is "the object, or null" spelled out.
_NULL: Schema = {"type": "object", "nullable": True, "enum": [None]}


def _nullable(schema: Schema) -> Schema:
    if "$ref" in schema:
        return {"anyOf": [schema, _NULL]}
    return {**schema, "nullable": True}


def _number(description: str, *, nullable: bool = False) -> Schema:
    schema: Schema = {"type": "number", "description": description}
    return _nullable(schema) if nullable else schema


def _integer(description: str, *, nullable: bool = False, minimum: int = 0) -> Schema:
    schema: Schema = {"type": "integer", "minimum": minimum, "description": description}
    return _nullable(schema) if nullable else schema


def _string(description: str, *, nullable: bool = False, enum: list[str] | None = None) -> Schema:
    schema: Schema = {"type": "string", "description": description}
    if enum is not None:
        schema["enum"] = enum
    return _nullable(schema) if nullable else schema


def _object(properties: dict[str, Schema], description: str = "") -> Schema:
    schema: Schema = {
        "type": "object",
        "required": sorted(properties),
        "properties": properties,
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


def _array(items: Schema, description: str = "") -> Schema:
    schema: Schema = {"type": "array", "items": items}
    if description:
        schema["description"] = description
    return schema


def _nullable_numbers(description: str) -> Schema:
    return _array({"type": "number", "nullable": True}, description)


STATUSES = ["warming", "ready", "stale", "error"]
MODES = ["active", "shadow"]
SIGNAL_KINDS = ["arrivals", "completions", "waiting", "running", "utilization", "pods"]
REPLICA_SOURCES = ["kubernetes", "prometheus", "none"]

_SUMMARY: dict[str, Schema] = {
    "key": _string("Display key: namespace/name#first 8 digest characters."),
    "namespace": _string("Namespace of the ScaledObject."),
    "name": _string("Name of the ScaledObject."),
    "digest": _string("Digest of the trigger's scalerMetadata; tells triggers of one ScaledObject apart."),
    "metric_name": _string("External metric name KEDA shows in the HPA."),
    "status": _string("warming, ready, stale or error.", enum=STATUSES),
    "mode": _string("active drives replicas; shadow only observes.", enum=MODES),
    "planned_replicas": _integer("Replicas the planner asks for.", nullable=True),
    "decided_at": _number("Unix time of the step the plan was decided for (the step grid).", nullable=True),
    "reactive_replicas": _integer("Replicas current demand alone needs.", nullable=True),
    "buffer_replicas": _integer("Placeholder replicas keeping nodes warm.", nullable=True),
    "ready_replicas": _integer("Ready replicas of the scale target as last observed.", nullable=True),
    "desired_replicas": _integer("Desired replicas of the scale target as last observed.", nullable=True),
    "model": _string("Model chosen for this series.", nullable=True),
    "last_sample_at": _number("Unix time of the newest sample.", nullable=True),
    "data_age_seconds": _number("Age of the newest sample when the snapshot was generated.", nullable=True),
    "api_url": _string("Path of this target's detail in the API."),
    "page_url": _string("Path of this target's web page."),
}

_SNAPSHOT_FIELDS: dict[str, Schema] = {
    "generated_at": _number("Engine clock time of the snapshot."),
    "generation": _integer("Sequence number of the snapshot."),
}

SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {
            "status": _integer("HTTP status code.", minimum=400),
            "error": _string("What went wrong, naming the parameter or target."),
        }
    ),
    "TargetSummary": _object(_SUMMARY, "One trigger of one ScaledObject."),
    "TargetList": _object(
        {**_SNAPSHOT_FIELDS, "targets": _array(_ref("TargetSummary"), "Sorted by namespace, name, digest.")}
    ),
    "ScaledObjectTargets": _object(
        {
            **_SNAPSHOT_FIELDS,
            "namespace": _string("Namespace of the ScaledObject."),
            "name": _string("Name of the ScaledObject."),
            "targets": _array(_ref("TargetSummary"), "Every trigger of this ScaledObject."),
        }
    ),
    "Spec": _object(
        {
            "query": _string("PromQL of the series (a preset is shown expanded)."),
            "preset": _string("Preset name, when the query came from one.", nullable=True),
            "prometheus_endpoint": _string("Name of the configured Prometheus endpoint (name only)."),
            "metric_kind": _string("load or utilisation.", enum=["load", "utilisation"]),
            "capacity_per_replica": _number("Demand one replica serves, or the per-replica target."),
            "target_coverage": _number("Share of steps the plan must cover."),
            "lead_time_seconds": _number("Pod startup time planned ahead for."),
            "node_lead_time_seconds": _number("Extra node startup time for the buffer."),
            "pods_per_node": _integer("Serving pods per node."),
            "max_buffer_replicas": _integer("Cap on placeholder replicas."),
            "history_window_seconds": _number("History kept."),
            "step_seconds": _number("Collection and planning interval."),
            "model": _string("Configured model (auto selects by backtest)."),
            "min_replicas": _integer("Lowest replica count planned."),
            "max_replicas": _integer("Highest replica count planned."),
            "activation_threshold": _number("IsActive threshold on forecast demand."),
            "scale_down_stabilization_seconds": _number("Scale-down stabilisation window."),
            "scale_down_percent_per_minute": _number("Largest share removed per minute."),
            "stale_after_seconds": _number("Data older than this makes the target stale."),
            "mode": _string("active or shadow.", enum=MODES),
            "workload_name": _string("Deployment the placeholders copy.", nullable=True),
            "replica_source": _string("Where the observed replicas are read.", enum=REPLICA_SOURCES),
        },
        "The target's parsed scalerMetadata.",
    ),
    "Freshness": _object(
        {
            "last_sample_at": _number("Unix time of the newest sample.", nullable=True),
            "age_seconds": _number("Age of the newest sample at generated_at.", nullable=True),
            "stale_after_seconds": _number("Age beyond which the target is stale."),
        }
    ),
    "History": _object(
        {
            "step_seconds": _number("Interval between points."),
            "total_points": _integer("Points held by the engine."),
            "returned_points": _integer("Points in this response (the newest ones)."),
            "timestamps": _nullable_numbers("Unix time of each point."),
            "values": _nullable_numbers("Offered demand at each point (see Demand); null marks a gap."),
        }
    ),
    "SignalSeries": _object(
        {
            "kind": _string("What the query measures.", enum=SIGNAL_KINDS),
            "unit": _string("requests/s, requests, fraction or pods."),
            "query": _string("PromQL of this signal.", nullable=True),
            "returned_points": _integer("Points in this response (the newest ones)."),
            "timestamps": _nullable_numbers("Unix time of each point."),
            "values": _nullable_numbers("The signal as observed, before any derivation; null where absent."),
        }
    ),
    "DemandDerivation": _object(
        {
            "value": _number(
                "Offered demand at the newest step; null when the signals do not determine it.", nullable=True
            ),
            "source": _string("The rule that derived it: arrivals, completions (+ change in backlog), utilisation."),
            "description": _string("The derivation in words, with any bound and its cause."),
            "lower_bound": {"type": "boolean", "description": "True when demand is at least value (censored)."},
            "saturated": {"type": "boolean", "description": "True when the ready replicas ran at capacity."},
            "missing_pods": _integer("Ready pods whose scrape was missing from the sums."),
        }
    ),
    "Demand": _object(
        {
            "unit": _string("Unit of offered demand (that of capacityPerReplica).", enum=["requests/s", "replicas"]),
            "derivation": _nullable(_ref("DemandDerivation")),
            "signals": _array(_ref("SignalSeries"), "The raw signals demand is derived from, in kind order."),
        },
        "Offered demand (the history) beside the raw signals it is derived from.",
    ),
    "ReplicaHistory": _object(
        {
            "returned_points": _integer("Points in this response (the newest ones)."),
            "timestamps": _nullable_numbers("Unix time of each point."),
            "ready": _nullable_numbers("Ready replicas observed; null where none was read."),
            "desired": _nullable_numbers("Desired replicas observed; null where none was read."),
        }
    ),
    "Replicas": _object(
        {
            "source": _string("Where the observed replicas are read.", enum=REPLICA_SOURCES),
            "ready": _integer("Ready replicas last observed.", nullable=True),
            "desired": _integer("Desired replicas last observed.", nullable=True),
            "planned": _integer("Replicas the decision asks for.", nullable=True),
            "reactive": _integer("Replicas current demand alone needs.", nullable=True),
            "history": _nullable(_ref("ReplicaHistory")),
        },
        "The scale target's replicas as observed, beside the planned ones.",
    ),
    "Quantile": _object(
        {
            "level": _number("Quantile level in (0, 1)."),
            "values": _nullable_numbers("The quantile at each forecast step."),
        }
    ),
    "Horizon": _object(
        {
            "name": _string("lead (pods) or node (pods plus nodes).", enum=["lead", "node"]),
            "seconds": _number("Length of the horizon."),
            "steps": _integer("Forecast step at the horizon (1-based).", minimum=1),
            "timestamp": _number("Unix time of that step."),
            "band": _nullable(
                _nullable_numbers("Quantiles at that step, one per level; null when the forecast is shorter.")
            ),
        }
    ),
    "Forecast": _object(
        {
            "model": _string("Model that produced the forecast."),
            "start": _number("Unix time of step 1."),
            "step_seconds": _number("Interval between steps."),
            "horizon_steps": _integer("Number of steps."),
            "timestamps": _array({"type": "number"}, "Unix time of each step: start + i * step."),
            "levels": _array({"type": "number"}, "Quantile levels, ascending."),
            "quantiles": _array(_ref("Quantile"), "One path per level."),
            "horizons": _array(_ref("Horizon"), "The band at the pod and node lead times."),
        }
    ),
    "ModelScore": _object(
        {
            "model": _string("Candidate model."),
            "mase": _number("Backtest MASE at the lead time.", nullable=True),
            "pinball": _number("Backtest pinball loss.", nullable=True),
            "coverage": _number("Backtest coverage of the planning quantile.", nullable=True),
            "failed": _string("Why the candidate failed, if it did.", nullable=True),
        }
    ),
    "ModelSelection": _object(
        {
            "configured": _string("Model named in the metadata."),
            "chosen": _string("Model in use.", nullable=True),
            "seasonal_periods": _array({"type": "integer"}, "Seasonal periods detected, in steps."),
            "backtest": _nullable(_ref("ModelScore")),
            "candidates": _array(_ref("ModelScore"), "Every candidate's backtest."),
        }
    ),
    "Coverage": _object(
        {
            "target": _number("Share of steps the plan must cover."),
            "achieved": _number("Share of recent steps actually covered.", nullable=True),
        }
    ),
    "Decision": _object(
        {
            "planned_replicas": _integer("Replicas asked for."),
            "reactive_replicas": _integer("Replicas current demand alone needs."),
            "buffer_replicas": _integer("Placeholder replicas."),
            "reason": _string("Why the planner chose this."),
            "forecast_at_lead": _number("Forecast at the lead time.", nullable=True),
            "forecast_at_node_lead": _number("Forecast at the node lead time.", nullable=True),
            "quantile_level": _number("Quantile the plan is made at."),
            "predictive": {"type": "boolean", "description": "False when the plan fell back to reactive."},
        }
    ),
    "Durations": _object(
        {
            "last_fit_seconds": _number("Duration of the last model fit.", nullable=True),
            "last_update_seconds": _number("Duration of the last collect-forecast-plan pass.", nullable=True),
        }
    ),
    "TargetDetail": _object(
        {
            **_SUMMARY,
            **_SNAPSHOT_FIELDS,
            "updated_at": _number("Engine clock time of the target's last update."),
            "servable": {"type": "boolean", "description": "True when gRPC answers from this target."},
            "spec": _ref("Spec"),
            "freshness": _ref("Freshness"),
            "history": _ref("History"),
            "demand": _ref("Demand"),
            "replicas": _ref("Replicas"),
            "forecast": _nullable(_ref("Forecast")),
            "model_selection": _ref("ModelSelection"),
            "coverage": _ref("Coverage"),
            "forecast_error_mase": _number("Rolling MASE of the chosen model.", nullable=True),
            "decision": _nullable(_ref("Decision")),
            "last_error": _string("Last collection or fit error.", nullable=True),
            "durations": _ref("Durations"),
            "prometheus_errors": _integer("Prometheus query errors for this target."),
        },
        "Everything the engine knows about one target.",
    ),
    "Health": _object({"status": _string("Always ok while the process serves.", enum=["ok"])}),
    "Readiness": _object(
        {
            "ready": {"type": "boolean", "description": "Whether the daemon serves decisions."},
            "generation": _integer("Sequence number of the latest snapshot."),
            "targets": _integer("Targets in the latest snapshot."),
        }
    ),
}


def _json_response(description: str, schema: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_ERROR_400 = _json_response("A query parameter is invalid.", "Error")
_ERROR_404 = _json_response("No such target.", "Error")

_NAMESPACE = {
    "name": "namespace",
    "in": "path",
    "required": True,
    "description": "Namespace of the ScaledObject.",
    "schema": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
}
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "Name of the ScaledObject.",
    "schema": {"type": "string", "pattern": "^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$", "maxLength": 253},
}
_DIGEST = {
    "name": "digest",
    "in": "path",
    "required": True,
    "description": "The trigger's metadata digest, or a prefix of it that names one trigger.",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{1,16}$"},
}
_POINTS = {
    "name": "points",
    "in": "query",
    "required": False,
    "description": f"Newest history points to return (default {DEFAULT_HISTORY_POINTS}).",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY_POINTS},
}


# A body over one chunk is streamed within a cap on concurrent such bodies.
_RETRY = _json_response(
    "Too many large responses are being sent, or the Kubernetes API could not review the token; retry.", "Error"
)
# With authentication on, every path but these needs a Kubernetes bearer token
# (docs/inspection.md#authentication). The kubelet probes these without credentials.
UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/readyz"})
_AUTHENTICATION_ERRORS = {
    "401": _json_response("No bearer token, or one the Kubernetes API does not accept.", "Error"),
    "403": _json_response("RBAC does not let the token's user get this path.", "Error"),
    "503": _RETRY,
}
_SECURITY_SCHEMES = {
    "kubernetesToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A token the Kubernetes API accepts (TokenReview); RBAC decides the paths it may get.",
    }
}


def _get(summary: str, responses: dict[str, Schema], parameters: list[Schema] | None = None) -> Schema:
    operation: Schema = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


PATHS: dict[str, Schema] = {
    "/api/v1/targets": _get(
        "All targets with their current plan.",
        {"200": _json_response("Every registered target.", "TargetList"), "503": _RETRY},
    ),
    "/api/v1/targets/{namespace}/{name}": _get(
        "Every trigger of one ScaledObject.",
        {"200": _json_response("The ScaledObject's targets.", "ScaledObjectTargets"), "404": _ERROR_404, "503": _RETRY},
        [_NAMESPACE, _NAME],
    ),
    "/api/v1/targets/{namespace}/{name}/{digest}": _get(
        "Demand beside raw signals, forecast band, model selection, coverage, decision and observed replicas.",
        {
            "200": _json_response("The target.", "TargetDetail"),
            "400": _ERROR_400,
            "404": _ERROR_404,
            "409": _json_response("The digest prefix matches more than one trigger.", "Error"),
            "503": _RETRY,
        },
        [_NAMESPACE, _NAME, _DIGEST, _POINTS],
    ),
    "/healthz": _get("Liveness.", {"200": _json_response("The process serves.", "Health")}),
    "/readyz": _get(
        "Readiness.",
        {
            "200": _json_response("Ready.", "Readiness"),
            "503": _json_response("Starting or shutting down.", "Readiness"),
        },
    ),
    "/metrics": _get(
        "Prometheus metrics (documented in docs/metrics.md).",
        {
            "200": {
                "description": "Text exposition format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            "503": _RETRY,
        },
    ),
    "/openapi.json": _get(
        "This document.",
        {"200": {"description": "OpenAPI 3.0.", "content": {"application/json": {"schema": {"type": "object"}}}}},
    ),
}


def _authenticated_paths() -> dict[str, Schema]:
    paths: dict[str, Schema] = {}
    for path, item in PATHS.items():
        operation = dict(item["get"])
        if path in UNAUTHENTICATED_PATHS:
            operation["security"] = []
        else:
            operation["responses"] = {**_AUTHENTICATION_ERRORS, **operation["responses"]}
        paths[path] = {"get": operation}
    return paths


def openapi_document(*, authenticated: bool = False) -> Schema:
    """The API as this daemon serves it: `authenticated` when requests need a bearer token."""
    if authenticated:
        document = openapi_document()
        document["paths"] = _authenticated_paths()
        document["security"] = [{"kubernetesToken": []}]
        document["components"] = {**document["components"], "securitySchemes": _SECURITY_SCHEMES}
        return document
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Predictive autoscaler inspection API",
            "version": "1.0.0",
            "description": (
                "Read-only views of the engine's latest snapshot: per target, the history of offered demand "
                "beside the raw signals it is derived from, the forecast band, the model selection, coverage, "
                "and the decision with its reason beside the replicas observed on the scale target."
            ),
        },
        "paths": PATHS,
        "components": {"schemas": SCHEMAS},
    }
