"""models/catalogue.yaml states the defaults the code really uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.domain.spec import MODELS
from autoscaler.forecast.selector import FALLBACKS, AutoForecaster, make_model

CATALOGUE = Path(__file__).resolve().parents[3] / "models" / "catalogue.yaml"
GBM_LEAD_STEPS = 3  # the lead the catalogue's gbm max_horizon is shown for


@pytest.fixture(scope="module")
def catalogue() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CATALOGUE.read_text())
    return loaded


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in params.items()}


def test_every_metadata_model_is_catalogued(catalogue: dict[str, Any]) -> None:
    assert set(catalogue["models"]) | {catalogue["selector"]["name"]} == set(MODELS)


@pytest.mark.parametrize("name", sorted(FALLBACKS))
def test_model_defaults_match_the_code(catalogue: dict[str, Any], name: str) -> None:
    entry = catalogue["models"][name]
    model = make_model(name, lead_steps=GBM_LEAD_STEPS)
    assert entry["hyperparameters"] == _plain(model.get_params())  # type: ignore[attr-defined]
    assert entry["fallback_chain"] == list(FALLBACKS[name])
    assert entry["class"] == f"{type(model).__module__}.{type(model).__name__}"


def test_selector_defaults_match_the_code(catalogue: dict[str, Any]) -> None:
    assert catalogue["selector"]["hyperparameters"] == _plain(AutoForecaster().get_params())
