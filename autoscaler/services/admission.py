"""Which new targets may register: a fair share of the engine's target cap per namespace.

The engine tracks at most `capacity` targets and refuses more. Without a share, one
namespace (or one caller inventing ScaledObjects in it) could fill the cap and leave
every other namespace's new ScaledObjects refused. So the last `reserve` places are
kept for namespaces below their fair share: once the engine holds `capacity - reserve`
targets, a namespace may register a new one only while it holds fewer than
`capacity / (N + 1)`, N being the namespaces with targets (itself included): its share
if one more namespace arrived, so a namespace alone cannot take the reserve either.
Targets already registered are never refused, so KEDA's calls for them keep being
answered.

A caller who invents many namespaces can still fill the reserve; who may call at all is
the job of mTLS and the NetworkPolicy (docs/grpc.md).
"""

from __future__ import annotations

from collections import Counter

from autoscaler.domain.spec import ScalerSpec
from autoscaler.domain.types import TargetKey
from autoscaler.engine.api import EngineView

DEFAULT_CAPACITY = 10_000
"""The engine's default `max_targets`; the daemon passes its configured one."""


class NamespaceOverShareError(OverflowError):
    """A namespace at or above its fair share asked to register another target."""


class NamespaceAdmission:
    """Registers targets with the engine, refusing a new one when its namespace is over its share."""

    def __init__(self, engine: EngineView, *, capacity: int = DEFAULT_CAPACITY, reserve_fraction: float = 0.1) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if not 0.0 <= reserve_fraction < 1.0:
            raise ValueError(f"reserve_fraction must be in [0, 1), got {reserve_fraction}")
        self._engine = engine
        self.capacity = capacity
        self.reserve = round(capacity * reserve_fraction)
        self._counted_generation = -1
        self._counts: Counter[str] = Counter()
        self._unpublished: set[TargetKey] = set()
        """Admitted since the counted snapshot and not yet in a published one."""

    def register(self, key: TargetKey, spec: ScalerSpec) -> None:
        """Register `key` (or mark contact with it); raise NamespaceOverShareError to refuse it.

        The engine's own errors (UnknownEndpointError, OverflowError at its cap) pass through.
        """
        snapshot = self._engine.snapshot()
        if key in snapshot.targets or key in self._unpublished:
            self._engine.ensure_target(key, spec)
            return
        counts = self._current_counts()
        held = counts[key.namespace]
        if sum(counts.values()) >= self.capacity - self.reserve:
            sharing = len(counts) + (0 if held else 1) + 1
            share = self.capacity / sharing
            if held >= share:
                raise NamespaceOverShareError(
                    f"namespace {key.namespace!r} holds {held} targets, at or above its fair share of "
                    f"{share:.0f} ({self.capacity} targets shared by {sharing} namespaces) while the daemon "
                    f"is within {self.reserve} of its target limit"
                )
        self._engine.ensure_target(key, spec)
        self._unpublished.add(key)
        counts[key.namespace] += 1

    def _current_counts(self) -> Counter[str]:
        """Targets per namespace: the published snapshot's, counted once per generation, plus unpublished ones."""
        snapshot = self._engine.snapshot()
        if snapshot.generation != self._counted_generation:
            published = snapshot.targets
            self._unpublished = {key for key in self._unpublished if key not in published}
            self._counts = Counter(key.namespace for key in published)
            self._counts.update(key.namespace for key in self._unpublished)
            self._counted_generation = snapshot.generation
        return self._counts
