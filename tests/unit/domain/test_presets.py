"""Every preset bundle: typed as the engine's metrics measure, valid PromQL, selector everywhere.

The queries are read back with a real PromQL parser (promql-parser), so "the selector is
inserted" means every vector selector carries it, and "one series" means every query is an
aggregation without grouping (or arithmetic between such aggregations).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import promql_parser
import pytest

from autoscaler.domain.errors import SpecError
from autoscaler.domain.presets import PRESETS, Preset, expand_preset, rate_window_seconds, validate_selector
from autoscaler.domain.signals import SignalKind

ARRIVALS, COMPLETIONS, WAITING = SignalKind.ARRIVALS, SignalKind.COMPLETIONS, SignalKind.WAITING
RUNNING, UTILIZATION, PODS = SignalKind.RUNNING, SignalKind.UTILIZATION, SignalKind.PODS

# What each preset measures, in order; the first is the signal it is named after.
BUNDLES: dict[str, tuple[SignalKind, ...]] = {
    "vllm": (COMPLETIONS, WAITING, RUNNING, PODS),
    "vllm-waiting": (WAITING, COMPLETIONS, RUNNING, PODS),
    "vllm-running": (RUNNING, COMPLETIONS, WAITING, PODS),
    "vllm-request-rate": (COMPLETIONS, WAITING, RUNNING, PODS),
    "vllm-token-rate": (COMPLETIONS, PODS),
    "vllm-kv-cache": (UTILIZATION, PODS),
    "sglang": (COMPLETIONS, WAITING, RUNNING, PODS),
    "sglang-token-usage": (UTILIZATION, PODS),
    "tgi-queue": (WAITING, COMPLETIONS, RUNNING, PODS),
    "tgi-request-rate": (ARRIVALS, WAITING, PODS),
    "triton-queue": (WAITING, COMPLETIONS, PODS),
    "triton-request-rate": (COMPLETIONS, WAITING, PODS),
    "dcgm-fb-used": (UTILIZATION, PODS),
    "inference-pool": (ARRIVALS, WAITING, PODS),
    "inference-pool-kv-cache": (UTILIZATION, PODS),
    "dynamo": (COMPLETIONS, WAITING, RUNNING, PODS),
}

# Names users have in ScaledObjects today; each must keep working.
EXISTING_NAMES = (
    "vllm-waiting",
    "vllm-running",
    "vllm-request-rate",
    "vllm-token-rate",
    "vllm-kv-cache",
    "tgi-queue",
    "tgi-request-rate",
    "triton-queue",
    "triton-request-rate",
    "dcgm-fb-used",
)

SELECTOR = 'namespace="llm",model_name=~"llama-.*"'
SELECTOR_MATCHERS = {("namespace", "MatchOp.Equal", "llm"), ("model_name", "MatchOp.Re", "llama-.*")}
PRESETS_DOC = Path(__file__).resolve().parents[3] / "docs" / "presets.md"


def _selectors(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(expr, post_visit=visit)
    return found


def _range_windows(expr: promql_parser.Expr) -> set[datetime.timedelta]:
    found: set[datetime.timedelta] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.MatrixSelector):
            found.add(node.range)

    promql_parser.walk(expr, post_visit=visit)
    return found


def _is_one_series(expr: promql_parser.Expr) -> bool:
    """An aggregation without `by`/`without`, or arithmetic between such expressions."""
    if isinstance(expr, promql_parser.ParenExpr):
        return _is_one_series(expr.expr)
    if isinstance(expr, promql_parser.AggregateExpr):
        return expr.modifier is None
    if isinstance(expr, promql_parser.BinaryExpr):
        return _is_one_series(expr.lhs) and _is_one_series(expr.rhs)
    return False


def test_every_preset_has_a_row_and_every_existing_name_is_kept() -> None:
    assert set(BUNDLES) == set(PRESETS)
    assert set(EXISTING_NAMES) <= set(PRESETS)


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_bundle_is_typed_as_its_engine_measures(name: str) -> None:
    preset = PRESETS[name]
    assert preset.name == name
    assert tuple(kind for kind, _ in preset.signals) == BUNDLES[name]
    assert preset.engine and preset.description and preset.checked_against


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_every_query_parses_carries_the_selector_and_returns_one_series(name: str) -> None:
    signals = expand_preset(name, SELECTOR, step_seconds=60)

    assert tuple(signal.kind for signal in signals) == BUNDLES[name]
    for signal in signals:
        parsed = promql_parser.parse(signal.query)
        selectors = _selectors(parsed)
        assert selectors, signal.query
        for selector in selectors:
            matchers = {(item.name, str(item.op), item.value) for item in selector.matchers.matchers}
            assert matchers >= SELECTOR_MATCHERS, f"{name} {signal.kind}: {selector} lacks the selector"
        assert _range_windows(parsed) <= {datetime.timedelta(seconds=120)}, signal.query
        assert _is_one_series(parsed), f"{name} {signal.kind}: {signal.query} may return several series"


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_an_empty_selector_still_expands_to_valid_promql(name: str) -> None:
    for signal in expand_preset(name, "", step_seconds=60):
        promql_parser.parse(signal.query)


def test_rate_window_follows_the_step() -> None:
    assert rate_window_seconds(30) == 120
    assert rate_window_seconds(300) == 600
    (completions, *_) = expand_preset("vllm", SELECTOR, step_seconds=300)
    assert _range_windows(promql_parser.parse(completions.query)) == {datetime.timedelta(seconds=600)}


@pytest.mark.parametrize(
    ("name", "kind", "metrics"),
    [
        ("vllm-kv-cache", UTILIZATION, {"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"}),
        ("vllm-kv-cache", PODS, {"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"}),
        (
            "inference-pool",
            ARRIVALS,
            {"llm_d_epp_request_total", "inference_objective_request_total", "inference_model_request_total"},
        ),
        (
            "inference-pool",
            WAITING,
            {
                "llm_d_epp_average_queue_size",
                "inference_pool_average_queue_size",
                "llm_d_epp_ready_endpoints",
                "inference_pool_ready_pods",
            },
        ),
        ("inference-pool", PODS, {"llm_d_epp_ready_endpoints", "inference_pool_ready_pods"}),
        (
            "inference-pool-kv-cache",
            UTILIZATION,
            {"llm_d_epp_average_kv_cache_utilization", "inference_pool_average_kv_cache_utilization"},
        ),
        (
            "dynamo",
            RUNNING,
            {"dynamo_frontend_active_requests", "dynamo_frontend_inflight_requests", "dynamo_frontend_queued_requests"},
        ),
    ],
)
def test_renamed_metrics_are_read_under_both_names(name: str, kind: SignalKind, metrics: set[str]) -> None:
    query = next(signal.query for signal in expand_preset(name, SELECTOR, step_seconds=60) if signal.kind is kind)
    assert {selector.name for selector in _selectors(promql_parser.parse(query))} == metrics


@pytest.mark.parametrize(
    ("signals", "message"),
    [
        (((WAITING, "sum(a{{{selector}}})"),), "no pods query"),
        (((PODS, "count(a{{{selector}}})"), (WAITING, "sum(a{{{selector}}})")), "first query"),
        (
            ((WAITING, "sum(a{{{selector}}})"), (WAITING, "sum(b{{{selector}}})"), (PODS, "count(a{{{selector}}})")),
            "more than one query of kind waiting",
        ),
        ((), "no pods query"),
    ],
)
def test_a_malformed_bundle_is_refused_when_defined(signals: tuple[tuple[SignalKind, str], ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Preset("broken", "a bundle with a mistake", "engine", "release", signals)


@pytest.mark.parametrize(
    "selector",
    ['a="b"}) or vector(1', 'a="b"} + 1 or b{c="d"', "a=b", 'a="b"[5m]'],
)
def test_a_selector_that_is_not_label_matchers_is_refused(selector: str) -> None:
    with pytest.raises(SpecError) as raised:
        validate_selector(selector)
    assert raised.value.key == "presetSelector"


def test_every_preset_is_documented_with_the_release_it_was_checked_against() -> None:
    text = PRESETS_DOC.read_text()
    for preset in PRESETS.values():
        assert f"### `{preset.name}`" in text, preset.name
        assert preset.checked_against in text, preset.name
        for kind, template in preset.signals:
            assert f"`{kind.value}`" in text
            # The docs show each query with selector S and window W.
            assert f"`{template.format(selector='S', window='W')}`" in text, (preset.name, kind)
