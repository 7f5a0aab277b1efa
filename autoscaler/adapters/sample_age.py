"""PromQL that tells how old the data behind a query is.

An instant query answers at its evaluation time, whatever the age of the samples
behind it: Prometheus carries a series' last sample forward for its lookback (5
minutes by default), and a series that gets no staleness marker (remote write,
federation, exported timestamps, a stuck recording rule) keeps answering with an old
value. So the answer's own timestamp says nothing about freshness.

`timestamp()` of a plain vector selector returns each raw sample's own time. For every
such selector in the queries, `max(timestamp(selector))` is its newest sample, and the
minimum over the selectors is the newest sample of the stalest input: the data is as
fresh as that. Selectors with `offset` or `@` read old data on purpose and are left out.
"""

from __future__ import annotations

import functools
import logging

import promql_parser

log = logging.getLogger(__name__)

_SELECTOR_LABEL = "autoscaler_selector"
"""Tells the per-selector answers apart, so `or` keeps each of them for the `min`."""


@functools.lru_cache(maxsize=65_536)
def newest_sample_query(queries: tuple[str, ...]) -> str | None:
    """One query for the newest raw sample of the stalest input of `queries`, in unix seconds.

    None when the queries read no plain selector (a constant, or only `offset`/`@`
    selectors): then only the answer's own time is known. Cached, because a target asks
    for the same queries every step (a parse takes about 0.13 ms; the cache holds more
    bundles than the daemon's default cap of targets).
    """
    selectors = dict.fromkeys(selector for query in queries for selector in plain_selectors(query))
    newest = [f"max(timestamp({selector}))" for selector in selectors]
    if len(newest) <= 1:
        return newest[0] if newest else None
    labelled = [f'label_replace({part}, "{_SELECTOR_LABEL}", "{index}", "", "")' for index, part in enumerate(newest)]
    return f"min({' or '.join(labelled)})"


def plain_selectors(query: str) -> list[str]:
    """The vector selectors of `query` (also those under range selectors) without offset or @."""
    try:
        expression = promql_parser.parse(query)
    except ValueError as error:
        # Prometheus itself accepted the query (its value is collected); only the age is unknown.
        log.warning("cannot parse query to measure its sample age", extra={"query": query[:200], "error": str(error)})
        return []
    found: list[str] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.offset is None and node.at is None:
            found.append(str(node))

    promql_parser.walk(expression, visit)
    return found
