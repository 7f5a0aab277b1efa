"""Limits the cluster operator sets on what a ScaledObject may make the daemon do.

A ScaledObject's scalerMetadata is written by whoever may create ScaledObjects; the
daemon's configuration by the operator. `apply_limits` checks a parsed spec against
the operator's limits (a SpecError names the metadata key and the limit, which the gRPC
layer answers with INVALID_ARGUMENT) and returns the spec the daemon will run: with
namespace tenancy, its queries confined to the ScaledObject's namespace.
`share_buffer_total` cuts the placeholder buffers of all workloads to the daemon-wide
total.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from autoscaler.domain.errors import SpecError
from autoscaler.domain.signals import SignalQuery
from autoscaler.domain.spec import SIGNAL_KEYS, ScalerSpec, primary_signal
from autoscaler.domain.tenancy import TenancyError, confine_to_namespace

_Group = TypeVar("_Group")
_CUSTOM_QUERY_KEYS = ("query", *SIGNAL_KEYS.values(), "replicasQuery")


class Tenancy(enum.StrEnum):
    NONE = "none"
    """Queries run as written."""
    NAMESPACE = "namespace"
    """Every selector of every query gets namespace="<the ScaledObject's namespace>"."""


@dataclass(frozen=True, slots=True)
class OperatorLimits:
    """The daemon configuration's `limits` section (autoscaler/settings.py documents each)."""

    placeholder_namespaces: frozenset[str] = frozenset()
    placeholders_written: bool = True
    """False when the daemon's actuator is off: nothing is written anywhere, so the
    namespace list does not bind and a ScaledObject that names a workload still plans."""
    max_buffer_replicas_per_target: int = 16
    max_buffer_replicas_total: int = 64
    allow_custom_queries: bool = True
    tenancy: Tenancy = Tenancy.NONE


DEFAULT_LIMITS = OperatorLimits()
"""The limits of a daemon configuration that leaves `limits` out."""


def apply_limits(
    spec: ScalerSpec, metadata: Mapping[str, str], *, namespace: str, limits: OperatorLimits
) -> ScalerSpec:
    """`spec` (parsed from `metadata`) as the daemon runs it in `namespace`, or SpecError naming key and limit."""
    wants_placeholders = limits.placeholders_written and spec.workload_name is not None and spec.max_buffer_replicas > 0
    if wants_placeholders and namespace not in limits.placeholder_namespaces:
        raise SpecError(
            "maxBufferReplicas",
            f"placeholders may not be written in namespace {namespace!r}: it is not in the operator's "
            "limits.placeholderNamespaces; set maxBufferReplicas to 0 or ask the operator to list the namespace",
        )
    if spec.max_buffer_replicas > limits.max_buffer_replicas_per_target:
        raise SpecError(
            "maxBufferReplicas",
            f"{spec.max_buffer_replicas} is above the operator's limit "
            f"limits.maxBufferReplicasPerTarget = {limits.max_buffer_replicas_per_target}",
        )
    if not limits.allow_custom_queries:
        custom = next((key for key in _CUSTOM_QUERY_KEYS if key in metadata), None)
        if custom is not None:
            raise SpecError(custom, "custom PromQL is not allowed (the operator's limits.allowCustomQueries is false)")
    if limits.tenancy is Tenancy.NAMESPACE:
        return _confined(spec, metadata, namespace)
    return spec


def _confined(spec: ScalerSpec, metadata: Mapping[str, str], namespace: str) -> ScalerSpec:
    """Every query of `spec` confined to `namespace`; a query that cannot be is an error on its key."""

    def confine(query: str, key: str) -> str:
        try:
            return confine_to_namespace(query, namespace)
        except TenancyError as error:
            raise SpecError(key, f"{error} (the operator's limits.tenancy is namespace)") from None

    def signal_key(signal: SignalQuery) -> str:
        custom = SIGNAL_KEYS[signal.kind]
        return custom if custom in metadata else ("query" if "query" in metadata else "preset")

    signals = tuple(replace(signal, query=confine(signal.query, signal_key(signal))) for signal in spec.signals)
    return replace(
        spec,
        signals=signals,
        query=primary_signal(signals).query if signals else confine(spec.query, "query"),
        replicas_query=None if spec.replicas_query is None else confine(spec.replicas_query, "replicasQuery"),
    )


def share_buffer_total(wanted: Mapping[_Group, int], total: int) -> dict[_Group, int]:
    """Each group's buffer cut so their sum stays within `total`, as a max-min fair share.

    Groups asking for less than an equal share keep what they asked; what they leave
    is shared equally among the rest (water-filling), so one large workload cannot
    take the whole budget from the others. Leftover replicas of an uneven division go
    to the groups first in `wanted`'s order.
    """
    if sum(wanted.values()) <= total:
        return dict(wanted)
    granted: dict[_Group, int] = {}
    remaining, budget = sorted(wanted, key=lambda group: wanted[group]), total
    while remaining:
        share = budget // len(remaining)
        small = [group for group in remaining if wanted[group] <= share]
        if not small:
            break
        for group in small:
            granted[group] = wanted[group]
            budget -= wanted[group]
        remaining = [group for group in remaining if group not in granted]
    order = [group for group in wanted if group not in granted]
    share, extra = divmod(budget, len(order)) if order else (0, 0)
    for index, group in enumerate(order):
        granted[group] = share + (1 if index < extra else 0)
    return {group: granted[group] for group in wanted}
