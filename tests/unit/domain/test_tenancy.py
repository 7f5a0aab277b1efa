from __future__ import annotations

import promql_parser
import pytest

from autoscaler.domain.presets import PRESETS, expand_preset
from autoscaler.domain.tenancy import TenancyError, confine_to_namespace

NS = 'namespace="team-a"'


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("up", f"up{{{NS}}}"),
        ('{__name__="up"}', f'{{__name__="up",{NS}}}'),
        ('foo{job="a"}', f'foo{{job="a",{NS}}}'),
        ("rate(foo[5m])", f"rate(foo{{{NS}}}[5m])"),
        ("foo offset 5m", f"foo{{{NS}}} offset 5m"),
        ("sum by (pod) (rate(foo[1m]))", f"sum by (pod) (rate(foo{{{NS}}}[1m]))"),
        ("topk(3, foo)", f"topk(3, foo{{{NS}}})"),
        ('count_values("v", foo)', f'count_values("v", foo{{{NS}}})'),
        # binary operators: both sides, set operators included
        ("foo + bar", f"foo{{{NS}}} + bar{{{NS}}}"),
        ("foo or bar", f"foo{{{NS}}} or bar{{{NS}}}"),
        ("foo and bar", f"foo{{{NS}}} and bar{{{NS}}}"),
        ("foo unless bar", f"foo{{{NS}}} unless bar{{{NS}}}"),
        ("foo > bool 3", f"foo{{{NS}}} > bool 3"),
        ("-foo", f"-foo{{{NS}}}"),
        ("(foo)", f"(foo{{{NS}}})"),
        # subqueries
        ("max_over_time(foo[10m:1m])", f"max_over_time(foo{{{NS}}}[10m:1m])"),
        (
            "max_over_time(rate(foo[1m])[10m:1m] offset 5m)",
            f"max_over_time(rate(foo{{{NS}}}[1m])[10m:1m] offset 5m)",
        ),
        # existing namespace matchers are replaced, whatever their operator
        ('foo{namespace="team-a"}', f"foo{{{NS}}}"),
        ('foo{namespace="other"}', f"foo{{{NS}}}"),
        ('foo{namespace!="team-a"}', f"foo{{{NS}}}"),
        ('foo{namespace=~"team-.*", job="a"}', f'foo{{job="a",{NS}}}'),
        ('foo{namespace!~"kube-.*"}', f"foo{{{NS}}}"),
        # no selector: nothing to confine
        ("vector(1)", "vector(1)"),
        ("time() - 3", "time() - 3"),
        ('label_replace(foo, "dst", "$1", "src", "(.*)")', f'label_replace(foo{{{NS}}}, "dst", "$1", "src", "(.*)")'),
        (
            "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
            f"histogram_quantile(0.9, sum by (le) (rate(h_bucket{{{NS}}}[5m])))",
        ),
    ],
)
def test_every_selector_is_confined(query: str, expected: str) -> None:
    confined = confine_to_namespace(query, "team-a")
    assert _one_line(confined) == _one_line(promql_parser.parse(expected).prettify())


def test_aggregation_over_a_binary_operation_with_matching() -> None:
    query = 'sum by (pod) (rate(a{job="x"}[5m])) / on (pod) group_left () max by (pod) (b{namespace="x"})'
    confined = _one_line(confine_to_namespace(query, "team-a"))
    assert confined == (f'sum by (pod) (rate(a{{job="x",{NS}}}[5m])) / on (pod) group_left () max by (pod) (b{{{NS}}})')


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_can_be_confined(name: str) -> None:
    selectors: list[promql_parser.VectorSelector] = []
    for signal in expand_preset(name, 'model_name="m1"', 60.0):
        confined = confine_to_namespace(signal.query, "team-a")
        promql_parser.walk(
            promql_parser.parse(confined),
            pre_visit=lambda node: selectors.append(node) if isinstance(node, promql_parser.VectorSelector) else None,
        )
    assert selectors
    for selector in selectors:
        namespaces = [matcher for matcher in selector.matchers.matchers if matcher.name == "namespace"]
        assert [(str(matcher.op), matcher.value) for matcher in namespaces] == [("MatchOp.Equal", "team-a")]


def test_the_result_is_stable() -> None:
    once = confine_to_namespace('sum(rate(foo{namespace="x"}[5m])) or bar', "team-a")
    assert confine_to_namespace(once, "team-a") == once


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("foo{", "is not valid PromQL"),
        ("sum(", "is not valid PromQL"),
        ("", "is not valid PromQL"),
        # the parser prints label values unescaped: refused, never sent altered
        ('foo{job="a\\"b"}', "cannot be confined to namespace 'team-a'"),
        ('foo{instance=~"host\\\\.example"}', "cannot be confined to namespace 'team-a'"),
        ('foo{job="a\\nb"}', "cannot be confined to namespace 'team-a'"),
        ('foo{a="1" or b="2"}', "cannot be confined to namespace 'team-a'"),
    ],
)
def test_a_query_that_cannot_be_confined_safely_is_refused(query: str, fragment: str) -> None:
    with pytest.raises(TenancyError, match=fragment):
        confine_to_namespace(query, "team-a")


def _one_line(query: str) -> str:
    return " ".join(query.split())
