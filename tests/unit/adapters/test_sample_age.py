"""Which selectors of a query measure its data's age, and the one query that reads it.

That Prometheus answers the built query with the raw samples' own times is tested on
the real server in tests/integration/test_prometheus_adapter.py.
"""

from __future__ import annotations

import pytest

from autoscaler.adapters.sample_age import newest_sample_query, plain_selectors


@pytest.mark.parametrize(
    ("query", "selectors"),
    [
        ("up", ["up{}"]),
        ('sum(rate(vllm:request_success_total{namespace="llm"}[1m]))', ['vllm:request_success_total{namespace="llm"}']),
        ("sum(a) / count(b)", ["a{}", "b{}"]),
        ("max_over_time(rate(x[1m])[10m:1m])", ["x{}"]),  # inside a subquery
        ('{__name__=~"a|b",job="x"}', ['{__name__=~"a|b",job="x"}']),
        ("x offset 5m", []),  # old on purpose
        ("x @ 1700000000 + y", ["y{}"]),
        ("vector(1)", []),
        ("sum(", []),  # Prometheus would refuse it; the age is then unknown, not invented
    ],
)
def test_plain_selectors(query: str, selectors: list[str]) -> None:
    assert plain_selectors(query) == selectors


@pytest.mark.parametrize(
    ("queries", "expected"),
    [
        (("sum(rate(x[1m]))",), "max(timestamp(x{}))"),
        (("sum(x)", "count(x)"), "max(timestamp(x{}))"),  # one selector asked once
        (
            ("sum(a)", "sum(b)"),
            'min(label_replace(max(timestamp(a{})), "autoscaler_selector", "0", "", "")'
            ' or label_replace(max(timestamp(b{})), "autoscaler_selector", "1", "", ""))',
        ),
        (("vector(1)",), None),
    ],
)
def test_newest_sample_query(queries: tuple[str, ...], expected: str | None) -> None:
    assert newest_sample_query(queries) == expected
