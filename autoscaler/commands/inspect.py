"""`autoscaler inspect [TARGET]`: the inspection API of a running daemon, in a terminal.

Without TARGET it prints a table of every target; with one it prints the decision, its
reason, the observed replicas beside the planned ones, how demand was derived, the model
selection, a sparkline of demand and forecast (median and band), and sparklines of the
raw signals and the observed replicas.
It only reads the daemon's JSON API, so it works against any reachable daemon.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

TICKS = "▁▂▃▄▅▆▇█"
EXIT_NOT_FOUND = 1
EXIT_USAGE_OR_UNREACHABLE = 2
Json = dict[str, Any]


class DaemonError(Exception):
    """The daemon answered with an error; the message is its own."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UnreachableError(Exception):
    """No answer from the daemon at all."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show the targets, forecasts and decisions of a running daemon",
        description="Print a table of targets, or one target's decision, reason and forecast sparkline.",
    )
    parser.add_argument(
        "target",
        nargs="?",
        metavar="TARGET",
        help="namespace/name (every trigger) or namespace/name#digest (a digest prefix is enough)",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="daemon HTTP address (default %(default)s)")
    parser.add_argument(
        "--points", type=int, default=60, help="history points in the sparkline, 1-2000 (default %(default)s)"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the daemon (default 5)")


def fetch(base_url: str, path: str, timeout: float) -> Json:
    url = urllib.parse.urljoin(base_url.rstrip("/") + "/", path.lstrip("/"))
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: Json = json.load(response)
            return body
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("error", exc.reason)
        except (json.JSONDecodeError, AttributeError):
            message = exc.reason
        raise DaemonError(exc.code, f"{message} (HTTP {exc.code})") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UnreachableError(f"cannot reach the daemon at {base_url}: {reason}") from None
    except json.JSONDecodeError:
        raise UnreachableError(f"{url} did not answer JSON; is --url the daemon's HTTP address?") from None


# ---- formatting -----------------------------------------------------------------------


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value)}"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def sparkline(values: Sequence[float | None], low: float, high: float) -> str:
    """One character per value on a shared scale; a gap (None) is a space."""
    span = high - low
    chars = []
    for value in values:
        if value is None or not math.isfinite(value):
            chars.append(" ")
            continue
        level = 0 if span <= 0 else round((value - low) / span * (len(TICKS) - 1))
        chars.append(TICKS[min(len(TICKS) - 1, max(0, level))])
    return "".join(chars)


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def targets_table(targets: list[Json]) -> str:
    rows = [["TARGET", "STATUS", "MODE", "READY", "PLANNED", "REACTIVE", "BUFFER", "MODEL", "DATA AGE"]]
    for t in targets:
        rows.append(
            [
                t["key"],
                t["status"],
                t["mode"],
                number(t["ready_replicas"]),
                number(t["planned_replicas"]),
                number(t["reactive_replicas"]),
                number(t["buffer_replicas"]),
                t["model"] or "-",
                duration(t["data_age_seconds"]),
            ]
        )
    return table(rows)


def _quantile(forecast: Json, level: float) -> Json:
    return min(forecast["quantiles"], key=lambda q: abs(q["level"] - level))


def forecast_chart(detail: Json) -> list[str]:
    """History, then the forecast: top band level, median, bottom band level, one scale."""
    history: list[float | None] = detail["history"]["values"]
    forecast = detail["forecast"]
    rows: list[tuple[str, list[float | None], list[float | None]]]
    if forecast is None:
        rows = [("demand", history, [])]
    else:
        top, bottom = forecast["quantiles"][-1], forecast["quantiles"][0]
        median = _quantile(forecast, 0.5)
        rows = [
            (f"p{top['level'] * 100:g}", [None] * len(history), top["values"]),
            (f"demand │ p{median['level'] * 100:g}", history, median["values"]),
            (f"p{bottom['level'] * 100:g}", [None] * len(history), bottom["values"]),
        ]
    seen = [v for _, past, future in rows for v in (*past, *future) if v is not None and math.isfinite(v)]
    if not seen:
        return ["(no data yet)"]
    low, high = min(seen), max(seen)
    lines = [
        f"{sparkline(past, low, high)}{'│' if forecast else ''}{sparkline(future, low, high)}  {label}"
        for label, past, future in rows
    ]
    step = duration(detail["history"]["step_seconds"])
    horizon = f", forecast {forecast['horizon_steps']} steps" if forecast else ""
    lines.append(f"scale {number(low)} – {number(high)}; {len(history)} points of {step}{horizon}")
    return lines


def _finite_values(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def signal_charts(detail: Json) -> list[str]:
    """Each raw signal on its own scale, then the observed replicas on one scale."""
    lines = []
    signals = detail["demand"]["signals"]
    width = max((len(s["kind"]) for s in signals), default=0)
    for signal in signals:
        seen = _finite_values(signal["values"])
        low, high = (min(seen), max(seen)) if seen else (0.0, 0.0)
        lines.append(
            f"{sparkline(signal['values'], low, high)}  {signal['kind'].ljust(width)}  "
            f"{number(low)} – {number(high)} {signal['unit']} (raw)"
        )
    history = detail["replicas"]["history"]
    if history is not None:
        seen = _finite_values([*history["ready"], *history["desired"]])
        high = max(seen, default=0.0)
        for name in ("ready", "desired"):
            lines.append(f"{sparkline(history[name], 0.0, high)}  {name.ljust(width)}  0 – {number(high)} replicas")
    return lines


def _observed_line(detail: Json) -> str:
    replicas = detail["replicas"]
    if replicas["ready"] is None:
        return f"observed  none yet (replicaSource {replicas['source']})"
    return (
        f"observed  ready {replicas['ready']}  desired {number(replicas['desired'])}  "
        f"vs planned {number(replicas['planned'])}  (replicaSource {replicas['source']})"
    )


def _demand_line(demand: Json) -> str:
    derivation = demand["derivation"]
    if derivation is None:
        return f"derived   nothing yet (demand in {demand['unit']})"
    bound = "; a lower bound" if derivation["lower_bound"] else ""
    return f"derived   {derivation['description']} ({demand['unit']}{bound})"


def target_detail(detail: Json) -> str:
    decision = detail["decision"]
    selection = detail["model_selection"]
    spec = detail["spec"]
    lines = [f"{detail['key']}  {detail['status']}  ({detail['mode']}, metric {detail['metric_name']})"]
    lines.append(f"query     {spec['query']}")
    if decision is None:
        lines.append("decision  none yet")
    else:
        lines.append(
            f"replicas  planned {decision['planned_replicas']}  reactive {decision['reactive_replicas']}  "
            f"buffer {decision['buffer_replicas']}  (quantile p{decision['quantile_level'] * 100:g}, "
            f"lead {duration(spec['lead_time_seconds'])}, node +{duration(spec['node_lead_time_seconds'])})"
        )
        lines.append(
            f"forecast  {number(decision['forecast_at_lead'])} at lead, "
            f"{number(decision['forecast_at_node_lead'])} at node lead"
        )
        lines.append(f"reason    {decision['reason']}")
    lines.append(_observed_line(detail))
    lines.append(_demand_line(detail["demand"]))
    candidates = ", ".join(
        f"{c['model']} {'failed: ' + c['failed'] if c['failed'] else number(c['mase'])}"
        for c in selection["candidates"]
    )
    lines.append(
        f"model     {selection['chosen'] or '-'} (configured {selection['configured']}); "
        f"rolling MASE {number(detail['forecast_error_mase'])}"
        + (f"; backtest MASE: {candidates}" if candidates else "")
    )
    lines.append(
        f"coverage  {percent(detail['coverage']['achieved'])} achieved / {percent(detail['coverage']['target'])} target"
    )
    freshness = detail["freshness"]
    lines.append(
        f"data      last sample {duration(freshness['age_seconds'])} old "
        f"(stale after {duration(freshness['stale_after_seconds'])})"
    )
    if detail["last_error"]:
        lines.append(f"error     {detail['last_error']}")
    lines.append("")
    lines.extend(forecast_chart(detail))
    lines.extend(signal_charts(detail))
    return "\n".join(lines)


# ---- the command ----------------------------------------------------------------------


def _split_target(text: str) -> tuple[str, str, str | None]:
    """'ns/name', 'ns/name#digest' or 'ns/name/digest' -> parts; ValueError otherwise."""
    path, _, digest = text.partition("#")
    parts = path.split("/")
    if len(parts) == 3 and not digest:
        parts, digest = parts[:2], parts[2]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"TARGET {text!r} must be namespace/name or namespace/name#digest")
    return parts[0], parts[1], digest or None


def _quote(*parts: str) -> str:
    return "/".join(urllib.parse.quote(part, safe="") for part in parts)


def render(args: argparse.Namespace) -> str:
    if args.target is None:
        listing = fetch(args.url, "/api/v1/targets", args.timeout)
        if not listing["targets"]:
            return "no targets yet: KEDA registers them on its first call"
        return targets_table(listing["targets"])
    namespace, name, digest = _split_target(args.target)
    if digest is None:
        triggers = fetch(args.url, f"/api/v1/targets/{_quote(namespace, name)}", args.timeout)["targets"]
        if len(triggers) > 1:
            return targets_table(triggers) + "\n\nname one trigger: namespace/name#digest"
        digest = triggers[0]["digest"]
    path = f"/api/v1/targets/{_quote(namespace, name, digest)}?points={args.points}"
    return target_detail(fetch(args.url, path, args.timeout))


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Exit 0 on success, 1 when the daemon has no such target, 2 on usage errors or no daemon."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        if not 1 <= args.points <= 2000:
            raise ValueError("--points must be between 1 and 2000")
        url = urllib.parse.urlsplit(args.url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"--url {args.url!r} must be the daemon's address, such as http://127.0.0.1:8080")
        print(render(args), file=out)
    except DaemonError as exc:
        print(f"autoscaler inspect: {exc}", file=err)
        return EXIT_NOT_FOUND
    except (ValueError, UnreachableError) as exc:
        print(f"autoscaler inspect: {exc}", file=err)
        return EXIT_USAGE_OR_UNREACHABLE
    return 0
