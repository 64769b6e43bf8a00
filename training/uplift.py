"""The push effect (docs/design.md §4): a meta-learner on LightGBM over the brand's control groups.

A (user, cutoff T) row is *held* when a holdout (`holdout_start` .. `holdout_end`) covers at least
`uplift.min_held_share` of (T, T+H], *pushed* when none touches it (partly held rows are left out).
The arm comes from events after T, like a label: it is the intervention the estimate is about, never
a feature. Per user the model estimates the effect of the brand's usual pushes over the next H:

    push_effect_churn = P(churn | pushed) - P(churn | held)      (positive: pushing raises churn)
    push_effect_spend = E[net spend | pushed] - E[net spend | held]

S-learner: one LightGBM per outcome with the arm as an input, the effect the difference of its
answers for the two arms (the arms share what predicts churn anyway; the trees split on the arm
where it matters). T-learner: one LightGBM per arm and outcome, the effect their difference. X-learner (Kuenzel et al.
2019): the T-learner's models impute each row's own effect against the other arm, a LightGBM per arm
regresses those, and the two are averaged with the arms' shares as weights (the model fitted on the
small control group's rows leans on the large group's first-stage model). Either way the model is a
weighted sum of boosters, stored as plain files (scorer.json + one booster.txt each), never pickled.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from siyu.config import Config
from siyu.contract import HOLDOUT_END, HOLDOUT_START
from training.scorer_files import write_spec

OUTCOMES = ("churn", "spend")
LABEL = "push_effect"  # its key in mlflow.model_names


def arms_sql(cutoffs: list, horizon_days: int, events: str = "events") -> str:
    """SQL of (user_id, cutoff, held_share, spend): the share of (T, T+H] a holdout covers, net spend in it.

    Markers arrive validated (events/validate.py): per user they alternate start, end, start, ...; a
    start without an end is still open at the end of the log.
    """
    cuts = ", ".join(f"TIMESTAMP '{pd.Timestamp(c):%Y-%m-%d %H:%M:%S}'" for c in cutoffs)
    H = f"INTERVAL {int(horizon_days)} DAY"
    return f"""
    WITH c AS (SELECT unnest([{cuts}]) AS cutoff),
    m AS (SELECT user_id, ts, event,
                 lead(ts) OVER (PARTITION BY user_id ORDER BY ts, event = '{HOLDOUT_START}') AS nxt
          FROM {events} WHERE event IN ('{HOLDOUT_START}', '{HOLDOUT_END}')),
    iv AS (SELECT user_id, ts AS s, coalesce(nxt, TIMESTAMP '9999-12-31') AS e FROM m WHERE event = '{HOLDOUT_START}'),
    held AS (SELECT iv.user_id, c.cutoff,
                    sum(epoch(least(iv.e, c.cutoff + {H})) - epoch(greatest(iv.s, c.cutoff)))
                        / {int(horizon_days) * 86400.0} AS held_share
             FROM iv JOIN c ON iv.s < c.cutoff + {H} AND iv.e > c.cutoff GROUP BY ALL),
    spend AS (SELECT e.user_id, c.cutoff,
                     sum(CASE WHEN e.event = 'purchase' THEN e.amount ELSE -e.amount END) AS spend
              FROM {events} e JOIN c ON e.ts > c.cutoff AND e.ts <= c.cutoff + {H}
              WHERE e.event IN ('purchase', 'refund') GROUP BY ALL)
    SELECT coalesce(h.user_id, s.user_id) AS user_id, coalesce(h.cutoff, s.cutoff) AS cutoff,
           coalesce(h.held_share, 0.0) AS held_share, coalesce(s.spend, 0.0) AS spend
    FROM held h FULL JOIN spend s ON h.user_id = s.user_id AND h.cutoff = s.cutoff
    """


def arms_frame(con, cutoffs: list, cfg: Config, events: str = "events") -> pd.DataFrame:
    """`arms_sql` run on DuckDB: rows only where a holdout or spend touches the horizon (others: 0, 0)."""
    df = con.execute(arms_sql(cutoffs, cfg.windows.horizon_days, events)).df()
    df["user_id"] = df["user_id"].astype(str)
    df["cutoff"] = pd.to_datetime(df["cutoff"])
    return df


def earlier_cutoffs(cutoffs: list, first_ts, cfg: Config) -> list:
    """Up to `uplift.extra_cutoffs` cutoffs before the labels' (same spacing), a spacing or more into the log."""
    from datetime import timedelta

    step = timedelta(days=cfg.windows.cutoff_spacing_days)
    oldest = pd.Timestamp(min(cutoffs)).to_pydatetime()
    out = [oldest - k * step for k in range(cfg.uplift.extra_cutoffs, 0, -1)]
    return [c for c in out if first_ts is not None and c >= first_ts + step]


def arm_rows(table: pd.DataFrame, arms: pd.DataFrame, min_held_share: float) -> tuple[np.ndarray, ...]:
    """Row positions of `table`'s churn population in an arm, with the arm (1 held, 0 pushed) and `spend`.

    Positions, not a copy: a pool of millions of rows is read column by column from the table itself.

    Args:
        table: training_table() rows (user_id, cutoff, features, in_churn_pop, churn).
        arms: arms_frame() output.
        min_held_share: share of the horizon a holdout must cover for the held arm (partly held rows: none).

    Returns:
        (positions, arm, spend), aligned.
    """
    pos = np.flatnonzero(table["in_churn_pop"].astype(bool).to_numpy() & table["churn"].notna().to_numpy())
    keys = pd.DataFrame(
        {
            "user_id": table["user_id"].to_numpy()[pos].astype(str),
            "cutoff": pd.to_datetime(table["cutoff"].to_numpy()[pos]),
        }
    )
    got = keys.merge(arms, on=["user_id", "cutoff"], how="left")
    share = got["held_share"].fillna(0.0).to_numpy()
    arm = np.where(share >= min_held_share, 1, np.where(share <= 0, 0, -1))
    keep = arm >= 0
    return pos[keep], arm[keep], got["spend"].fillna(0.0).to_numpy()[keep]


def attach_arms(table: pd.DataFrame, arms: pd.DataFrame, min_held_share: float) -> pd.DataFrame:
    """The churn population of `table` with `arm` (1 held, 0 pushed; partly held rows dropped) and `spend`.

    Args:
        table: training_table() rows (user_id, cutoff, features, in_churn_pop, churn).
        arms: arms_frame() output.
        min_held_share: share of the horizon a holdout must cover for the held arm.
    """
    return with_arms(table, *arm_rows(table, arms, min_held_share))


def with_arms(table: pd.DataFrame, pos: np.ndarray, arm: np.ndarray, spend: np.ndarray) -> pd.DataFrame:
    """`table`'s rows at positions `pos` with their `arm` and `spend` columns (as arm_rows gives them)."""
    with warnings.catch_warnings():  # the training table is built column by column; no copy of it here
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        return table.iloc[pos].assign(arm=arm, spend=spend)


@dataclass
class PushEffectModel:
    """Effects per outcome as weighted sums of LightGBM boosters over rows in `feature_names` order."""

    name: str
    version: int
    feature_names: list[str]
    terms: dict[str, list[tuple[Any, float, int | None]]]  # outcome -> [(booster, weight, arm input or None)]
    learner: str
    info: dict = field(default_factory=dict)  # held share, rows per arm (scorer.json)
    label: str = LABEL
    kind: str = "uplift"

    def effects(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """outcome -> estimated push effect per row of X (n x features, NaN = missing)."""
        X = np.asarray(X, dtype=np.float64)
        # S-learner terms read the arm too; a copy of X per arm only for those (a T- or X-learner has none).
        arms = sorted({a for t in self.terms.values() for _, _, a in t if a is not None})
        cols = {a: np.c_[X, np.full(len(X), float(a))] for a in arms}
        return {o: sum(w * b.predict(X if a is None else cols[a]) for b, w, a in t) for o, t in self.terms.items()}

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The churn effect (what the MLflow pyfunc returns)."""
        return self.effects(X)["churn"]

    def save(self, folder: str | Path) -> Path:
        """Write scorer.json and one booster file per term into `folder`; returns it."""
        files = {o: [[f"{o}_{i}.txt", w, a] for i, (_, w, a) in enumerate(t)] for o, t in self.terms.items()}
        folder = write_spec(
            folder,
            self.kind,
            self.label,
            self.name,
            self.feature_names,
            learner=self.learner,
            terms=files,
            info=self.info,
        )
        for o, t in self.terms.items():
            for (b, _, _), (fname, _, _) in zip(t, files[o]):
                b.save_model(str(folder / fname))
        return folder


def load_push_effect(folder: Path, spec: dict, name: str, version: int) -> PushEffectModel:
    """scorer_files loader of kind `uplift`."""
    import lightgbm as lgb

    terms = {
        o: [(lgb.Booster(model_file=str(folder / f)), float(w), a) for f, w, a in files]
        for o, files in spec["terms"].items()
    }
    return PushEffectModel(name, version, list(spec["feature_names"]), terms, spec["learner"], spec.get("info", {}))


def _fit(X: np.ndarray, y: np.ndarray, objective: str, cfg: Config, names: list[str], threads: int = 0):
    import lightgbm as lgb

    u = cfg.uplift
    from training.tuning import threaded

    params = threaded({**u.lgbm_params, "objective": objective, "seed": cfg.training.seed, "verbose": -1}, threads)
    data = lgb.Dataset(X, y, feature_name=list(names), free_raw_data=True)
    return lgb.train(params, data, num_boost_round=u.num_boost_round)


def fit_push_effect(
    X: np.ndarray, churn: np.ndarray, spend: np.ndarray, held: np.ndarray, cfg: Config, names: list[str], name: str
) -> PushEffectModel:
    """Fit the configured meta-learner for both outcomes.

    Args:
        X: feature rows (training cutoffs only).
        churn: 0/1 churn label per row.
        spend: net spend over the horizon per row.
        held: bool per row, True in the held arm.
        cfg: the config (uplift.learner, uplift.lgbm_params, uplift.num_boost_round, training.seed).
        names: feature names (column order of X).
        name: registered model name.

    Returns:
        The PushEffectModel.
    """
    held = np.asarray(held, dtype=bool)
    e = float(1.0 - held.mean())  # share pushed: the control groups are drawn at random
    terms: dict[str, list[tuple[Any, float, int | None]]] = {}
    outcomes = {
        "churn": (np.asarray(churn, dtype=float), "binary"),
        "spend": (np.asarray(spend, dtype=float), "regression"),
    }
    arms = {}
    if cfg.uplift.learner != "s":  # the four arm models are independent: side by side, one thread each
        from training.tuning import Job, fold_map

        def arm_fit(job: Job, threads: int):
            outcome, arm = job.key  # arm True: the held arm
            rows = held == arm
            return _fit(X[rows], outcomes[outcome][0][rows], outcomes[outcome][1], cfg, names, threads)

        jobs = [Job((o, arm), int((held == arm).sum())) for o in outcomes for arm in (False, True)]
        arms = {j.key: m for j, m in zip(jobs, fold_map(arm_fit, jobs))}
    for outcome, (y, objective) in outcomes.items():
        if cfg.uplift.learner == "s":
            m = _fit(np.c_[X, held.astype(float)], y, objective, cfg, [*names, "held"])
            terms[outcome] = [(m, 1.0, 0), (m, -1.0, 1)]
            continue
        m_push, m_held = arms[(outcome, False)], arms[(outcome, True)]
        if cfg.uplift.learner == "t":
            terms[outcome] = [(m_push, 1.0, None), (m_held, -1.0, None)]
            continue
        d_push = y[~held] - m_held.predict(X[~held])  # pushed rows: own outcome against the held model
        d_held = m_push.predict(X[held]) - y[held]  # held rows: the pushed model against own outcome
        tau_push = _fit(X[~held], d_push, "regression", cfg, names)
        tau_held = _fit(X[held], d_held, "regression", cfg, names)
        terms[outcome] = [(tau_held, e, None), (tau_push, 1.0 - e, None)]
    info = {"pushed_share": e, "rows_pushed": int((~held).sum()), "rows_held": int(held.sum())}
    return PushEffectModel(name, 0, list(names), terms, cfg.uplift.learner, info)
