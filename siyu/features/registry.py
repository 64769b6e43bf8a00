"""The feature registry: every feature declared once (name, family, meaning, unit).

Training uses the order of FEATURES as the model's column order; the model
report and the API's reasons read `meaning` and `unit` from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Feature:
    """One model input.

    Attributes:
        name: column name in feature tables.
        family: signal family (recency, frequency, monetary, engagement, trust, advocacy, ladder, ...).
        meaning: one readable sentence, used in reasons ("days since the last purchase").
        unit: days, count, ratio, currency, tier rank, ...
        kind: numeric, or categorical (encoded as an integer code).
        monotone: expected direction per label (+1 risk rises with it, -1 falls, 0 free).
    """

    name: str
    family: str
    meaning: str
    unit: str
    kind: Literal["numeric", "categorical"] = "numeric"
    monotone: tuple[tuple[str, int], ...] = ()


FEATURES: list[Feature] = []
"""Filled by siyu.features.features (the feature SQL) -- one list in code."""


def feature_names() -> list[str]:
    """Column order of the model inputs."""
    return [f.name for f in FEATURES]
