"""Namespace tenancy: every selector of a query gets `namespace="<the ScaledObject's namespace>"`.

As prom-label-proxy enforces a label, on the parsed query (promql-parser), never on its
text: each vector selector, bare or inside a range, subquery, aggregation, function
call or either side of a binary operator (`or` included), loses any matcher it had on
`namespace` and gets the equality matcher instead. A query that named another
namespace, a regex of them or a negation is therefore confined, not refused.

The parser prints a selector it was handed back, but does not escape quotes,
backslashes or newlines in label values. So the printed query is parsed again and
compared, selector by selector, with what the rewrite meant; a query that does not
survive the trip is refused rather than sent altered.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import promql_parser

TENANCY_LABEL = "namespace"

_Fingerprint = tuple[tuple[Any, ...], ...]


class TenancyError(ValueError):
    """The query cannot be parsed, or cannot be confined to a namespace without altering it."""


def confine_to_namespace(query: str, namespace: str) -> str:
    """`query` with every selector restricted to `namespace`; TenancyError when that cannot be done safely."""
    try:
        parsed = promql_parser.parse(query)
    except ValueError as error:
        raise TenancyError(f"is not valid PromQL: {error}") from None
    matcher = promql_parser.Matcher(promql_parser.MatchOp.Equal, TENANCY_LABEL, namespace)

    def confine(node: promql_parser.Expr) -> promql_parser.Expr | None:
        if not isinstance(node, promql_parser.VectorSelector):
            return None
        kept = [item for item in node.matchers.matchers if item.name != TENANCY_LABEL]
        groups = [[item for item in group if item.name != TENANCY_LABEL] for group in node.matchers.or_matchers]
        node.matchers = promql_parser.Matchers([*kept, matcher] if kept or not groups else []).with_or_matchers(
            [[*group, matcher] for group in groups]
        )
        # The binding keeps an edited selector on the Python side only; a parsed one rejoins the tree.
        try:
            return promql_parser.parse(str(node))
        except ValueError as error:
            raise TenancyError(f"cannot be confined to namespace {namespace!r}: {error}") from None

    rewritten = promql_parser.transform(parsed, post_visit=confine).prettify()
    try:
        reparsed = promql_parser.parse(rewritten)
    except ValueError as error:
        raise TenancyError(f"cannot be confined to namespace {namespace!r}: {error}") from None
    if _fingerprint(reparsed, _as_written) != _fingerprint(parsed, lambda matchers: _confined(matchers, namespace)):
        raise TenancyError(
            f"cannot be confined to namespace {namespace!r}: the rewritten query would differ from it"
            " (a label value with a quote, backslash or newline?)"
        )
    return rewritten


_MatcherSet = frozenset[tuple[str, str, str]]
_MatcherGroups = tuple[_MatcherSet, ...]


def _as_written(matchers: promql_parser.Matchers) -> _MatcherGroups:
    groups = [matchers.matchers] if matchers.matchers else []
    return tuple(_matcher_set(group) for group in [*groups, *matchers.or_matchers])


def _confined(matchers: promql_parser.Matchers, namespace: str) -> _MatcherGroups:
    enforced = (TENANCY_LABEL, str(promql_parser.MatchOp.Equal), namespace)
    return tuple(
        frozenset({item for item in group if item[0] != TENANCY_LABEL} | {enforced}) for group in _as_written(matchers)
    ) or (frozenset({enforced}),)


def _matcher_set(group: list[promql_parser.Matcher]) -> _MatcherSet:
    return frozenset((item.name, str(item.op), item.value) for item in group)


def _fingerprint(
    expr: promql_parser.Expr, selector: Callable[[promql_parser.Matchers], _MatcherGroups]
) -> _Fingerprint:
    """The tree in walk order: node types, literals and each selector's name, matchers and modifiers."""
    nodes: list[tuple[Any, ...]] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            nodes.append(("selector", node.name, selector(node.matchers), node.offset, str(node.at)))
        elif isinstance(node, promql_parser.StringLiteral | promql_parser.NumberLiteral):
            nodes.append((type(node).__name__, node.val))
        elif isinstance(node, promql_parser.BinaryExpr | promql_parser.AggregateExpr):
            nodes.append((type(node).__name__, str(node.op), str(node.modifier)))
        elif isinstance(node, promql_parser.Call):
            nodes.append(("call", node.func.name))
        elif isinstance(node, promql_parser.MatrixSelector):
            nodes.append(("range", node.range))
        elif isinstance(node, promql_parser.SubqueryExpr):
            nodes.append(("subquery", node.range, node.step, node.offset, str(node.at)))
        else:
            nodes.append((type(node).__name__,))

    promql_parser.walk(expr, pre_visit=visit)
    return tuple(nodes)
