"""The scikit-learn estimator habits shared by every forecaster.

Hyperparameters are the `__init__` keyword arguments, stored under the same names;
learned state ends in `_` and appears only after `fit`. `get_params` reads the
signature, so a model cannot silently drop or rename a hyperparameter.
"""

from __future__ import annotations

import inspect
from typing import Any

from autoscaler.forecast.base import NotFittedError


def is_learned(name: str) -> bool:
    return name.endswith("_") and not name.startswith("__")


class Estimator:
    """Base for forecasters: parameter introspection, repr and the fitted check."""

    name: str = "estimator"
    # Set on the instance by the first learned attribute, so the check that runs on
    # every update and predict is one attribute read instead of a scan of vars().
    _has_learned: bool = False

    def __setattr__(self, name: str, value: Any) -> None:
        if not self._has_learned and is_learned(name):
            object.__setattr__(self, "_has_learned", True)
        object.__setattr__(self, name, value)

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        signature = inspect.signature(cls.__init__)
        return tuple(
            parameter.name
            for parameter in signature.parameters.values()
            if parameter.name != "self" and parameter.kind is not inspect.Parameter.VAR_KEYWORD
        )

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def learned_attributes(self) -> tuple[str, ...]:
        return tuple(name for name in vars(self) if is_learned(name))

    def _require_fitted(self) -> None:
        if not self._has_learned:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit first")

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({args})"
