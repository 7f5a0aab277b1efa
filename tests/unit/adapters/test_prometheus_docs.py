"""docs/prometheus.md shows exactly the presets the code expands."""

from __future__ import annotations

from pathlib import Path

from autoscaler.domain.presets import PRESETS

DOC = Path(__file__).resolve().parents[3] / "docs" / "prometheus.md"
BEGIN = "<!-- presets table: generated from PRESETS, checked by tests/unit/adapters/test_prometheus_docs.py -->"
END = "<!-- end of presets table -->"


def presets_markdown_table() -> str:
    rows = ["| preset | engine | signals | description |", "|---|---|---|---|"]
    for preset in PRESETS.values():
        signals = ", ".join(kind.value for kind, _ in preset.signals)
        rows.append(f"| `{preset.name}` | {preset.engine} | {signals} | {preset.description} |")
    return "\n".join(rows)


def test_the_presets_table_matches_the_code() -> None:
    text = DOC.read_text()
    documented = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    expected = presets_markdown_table()
    assert documented == expected, f"regenerate the table in {DOC}:\n{expected}"
