"""Registration's fair share per namespace, over the fake engine and its own target cap."""

from __future__ import annotations

import pytest

from autoscaler.domain.snapshot import TargetSnapshot
from autoscaler.domain.types import TargetKey
from autoscaler.services.admission import NamespaceAdmission, NamespaceOverShareError
from tests.unit.services.fake_engine import FakeEngine, key_and_spec, metadata

CAPACITY = 100


def register(admission: NamespaceAdmission, namespace: str, name: str) -> TargetKey:
    key, spec = key_and_spec(namespace, name, metadata())
    admission.register(key, spec)
    return key


def flood(admission: NamespaceAdmission, namespaces: list[str], attempts: int) -> dict[str, int]:
    """Register names round-robin over `namespaces` until each is refused; count the admitted."""
    admitted = dict.fromkeys(namespaces, 0)
    for index in range(attempts):
        namespace = namespaces[index % len(namespaces)]
        try:
            register(admission, namespace, f"flood-{index}")
        except OverflowError:
            continue
        admitted[namespace] += 1
    return admitted


@pytest.fixture
def engine() -> FakeEngine:
    engine = FakeEngine()
    engine.max_targets = CAPACITY
    return engine


@pytest.mark.parametrize("flooding", [["attacker"], ["a", "b", "c"]], ids=["one namespace", "three namespaces"])
def test_a_flood_leaves_the_reserve_to_a_new_namespace(engine: FakeEngine, flooding: list[str]) -> None:
    admission = NamespaceAdmission(engine, capacity=CAPACITY, reserve_fraction=0.1)
    admitted = flood(admission, flooding, attempts=1000)
    assert sum(admitted.values()) == CAPACITY - admission.reserve
    register(admission, "real", "new-scaledobject")  # a real ScaledObject elsewhere still registers
    for namespace in flooding:
        with pytest.raises(NamespaceOverShareError, match=f"namespace '{namespace}' holds"):
            register(admission, namespace, "one-more")


def test_registered_targets_are_never_refused(engine: FakeEngine) -> None:
    admission = NamespaceAdmission(engine, capacity=CAPACITY, reserve_fraction=0.1)
    first = register(admission, "busy", "first")
    flood(admission, ["busy"], attempts=200)
    key, spec = key_and_spec("busy", "first", metadata())
    assert key == first
    admission.register(key, spec)  # contact with a known target: ensure_target again, no refusal
    assert engine.registrations.count(first) == 2


def test_below_the_reserve_a_namespace_takes_what_it_needs(engine: FakeEngine) -> None:
    admission = NamespaceAdmission(engine, capacity=CAPACITY, reserve_fraction=0.5)
    assert flood(admission, ["only"], attempts=CAPACITY) == {"only": 50}


def test_counts_follow_evictions(engine: FakeEngine) -> None:
    admission = NamespaceAdmission(engine, capacity=CAPACITY, reserve_fraction=0.1)
    flood(admission, ["a"], attempts=200)
    with pytest.raises(NamespaceOverShareError):
        register(admission, "a", "refused")
    for key in list(engine.snapshot().targets)[:20]:  # the engine evicts idle targets
        engine.drop(key)
    register(admission, "a", "admitted-after-eviction")


@pytest.mark.parametrize(("capacity", "reserve"), [(0, 0.1), (10, 1.0), (10, -0.1)])
def test_bad_settings_are_errors(engine: FakeEngine, capacity: int, reserve: float) -> None:
    with pytest.raises(ValueError, match=r"capacity|reserve_fraction"):
        NamespaceAdmission(engine, capacity=capacity, reserve_fraction=reserve)


class CoalescingEngine(FakeEngine):
    """Publishes registrations only on `flush`, as the real engine coalesces its publishes."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[TargetSnapshot] = []

    def publish(self, *snapshots: TargetSnapshot) -> None:
        self.held.extend(snapshots)

    def flush(self) -> None:
        FakeEngine.publish(self, *self.held)
        self.held.clear()


def test_registrations_not_yet_published_count_toward_the_share() -> None:
    engine = CoalescingEngine()
    admission = NamespaceAdmission(engine, capacity=CAPACITY, reserve_fraction=0.1)
    assert flood(admission, ["burst"], attempts=200) == {"burst": 90}  # all within one publish
    engine.flush()
    with pytest.raises(NamespaceOverShareError):
        register(admission, "burst", "after-publish")
    register(admission, "other", "still-admitted")
