"""The operator rule as a scorer, for labels without a champion (too little data to train one).

A thin log still deserves an answer: instead of failing with "no champion", batch scoring and
the API score such a label with the rule an operator would use (training/baselines.py), made a
probability by measuring it on the same log one horizon earlier, where labels are complete:

- churn: the churn rate of users by days since their last activity (`training.rule_recency_feature`),
  in the bins of `windows.feature_windows` (<= 7, <= 30, <= 90, longer, never);
- promotion / koc: the rate of the label among users of the same current tier.

The rates travel in the snapshot's metadata, so the API scores posted events with the very same
rule; answers say `scorer: rule` for such a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from siyu.config import Config
from siyu.contract import unseen_labels
from siyu.errors import SiyuError


@dataclass
class RuleModel:
    """A lookup-table scorer with the ScoringModel interface (no booster: no reasons).

    Attributes:
        label: churn, promotion or koc.
        feature: the one feature it reads.
        edges: bin upper bounds (churn: days) or None (promotion / koc: exact tier ranks).
        rates: rate per bin (len(edges) + 2: the bins, longer, missing) or per tier rank (str keys).
        overall: rate of the whole population (unseen tiers).
        measured_at: the past cutoff the rates were measured at.
    """

    label: str
    feature: str
    edges: list[float] | None
    rates: list[float] | dict[str, float]
    overall: float
    measured_at: str
    version: int | None = None
    booster: None = None
    kind: str = "operator_rule"  # not "rule": that is the registered rule baseline, which has a version

    @property
    def name(self) -> str:
        return f"rule:{self.label}"

    @property
    def feature_names(self) -> list[str]:
        return [self.feature]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The rule's rate for each row (X: one column, `feature`)."""
        x = np.asarray(X, dtype=float)[:, 0]
        if self.edges is not None:
            rates = np.asarray(self.rates, dtype=float)
            idx = np.searchsorted(np.asarray(self.edges, dtype=float), x, side="left")
            idx = np.where(np.isnan(x), len(self.edges) + 1, idx)
            return rates[idx]
        table = {float(k): v for k, v in self.rates.items()}
        return np.array([table.get(v, self.overall) for v in x], dtype=float)

    def to_meta(self) -> dict:
        """The rule as JSON-ready metadata (see from_meta)."""
        return {
            "label": self.label,
            "feature": self.feature,
            "edges": self.edges,
            "rates": self.rates,
            "overall": self.overall,
            "measured_at": self.measured_at,
        }

    @classmethod
    def from_meta(cls, meta: dict) -> RuleModel:
        return cls(**meta)


def _rate(y: np.ndarray, default: float) -> float:
    return float(y.mean()) if len(y) else default


def fit_rules(con, asof: datetime, cfg: Config, labels: list[str], families) -> dict[str, RuleModel]:
    """Measure the operator rule of each label on the log one horizon before `asof`.

    Args:
        con: DuckDB connection holding the canonical `events`.
        asof: the scoring cutoff (brand-local); the rates come from asof - H, whose labels end at asof.
        cfg: config (horizon, feature windows, the churn rule's recency feature).
        labels: the labels that need a rule.
        families: event families present in the log (features.compute.present_families).

    Returns:
        label -> RuleModel; a label the log cannot show is left out (siyu.contract.unseen_labels: koc on a
        log without advocacy events, where a rule would give every user 0 and a percentile that means nothing).

    Raises:
        SiyuError: no user is known one horizon before asof (nothing to measure the rule on).
    """
    from training.table import training_table

    unseen = unseen_labels(families)
    labels = [lab for lab in labels if lab not in unseen]
    if not labels:
        return {}
    past = asof - timedelta(days=cfg.windows.horizon_days)
    if not con.execute("SELECT count(*) FROM events WHERE ts <= ?", [past]).fetchone()[0]:
        raise SiyuError(
            f"no champion for {', '.join(labels)} and no events before {past:%Y-%m-%d} to measure the operator "
            "rule on: run `siyu train` on a longer log"
        )
    table = training_table(con, [past], cfg)
    rules = {}
    for lab in labels:
        pop = table[table[f"in_{lab}_pop"].astype(bool) & table[lab].notna()]
        y = pop[lab].to_numpy(dtype=float)
        overall = _rate(y, 0.0)
        if lab == "churn":
            feat = cfg.training.rule_recency_feature
            edges = [float(w) for w in sorted(cfg.windows.feature_windows)]
            x = pop[feat].to_numpy(dtype=float)
            b = np.where(np.isnan(x), len(edges) + 1, np.searchsorted(edges, x, side="left"))
            rates = [_rate(y[b == i], overall) for i in range(len(edges) + 2)]
            rules[lab] = RuleModel(lab, feat, edges, rates, overall, past.isoformat())
        else:
            tiers = pop["tier"].to_numpy(dtype=float)
            rates = {str(float(t)): _rate(y[tiers == t], overall) for t in np.unique(tiers)}
            rules[lab] = RuleModel(lab, "tier", None, rates, overall, past.isoformat())
    return rules
