"""The LTV boosters' final fit, and validation predictions cross-fitted on users the fit never saw.

An LTV target spans L days (180) and the training cutoffs sit one spacing (30) apart, so the
target of a user's row at the held-back cutoff shares 150 days with that user's validation
target: the validation period itself. A model fitted on those rows has, in part, seen the answer
for the very users it is judged on. On the default world a booster scored 0.012 Gini higher on
the users it was fitted on than on users it was not (0.026 at 15-day spacing); the baselines fit
no targets and gain nothing. So the figures that judge the model come from `ltv.cross_fit_groups`
models, each fitted (the same recipe, parameters and rounds rule) without one seeded group of users
and predicting that group's validation rows. The model that is registered and served is fitted on
every user; it is judged a little conservatively (on fewer rows), never optimistically.
Period effects stay shared (other users' targets cover the same months): documented, not removed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from siyu.config import Config
from training.ltv_model import LTVModel, fit_part, nonnegative, tweedie_params


def user_groups(user_ids: pd.Series, seed: int, k: int = 2) -> np.ndarray:
    """0 .. k-1 per row from a seeded hash of the user id: the same user is always in the same group."""
    h = pd.util.hash_pandas_object(user_ids.astype(str) + f"#{seed}", index=False).to_numpy()
    return (h % np.uint64(k)).astype(np.int16)


def fit_parts(
    own_params: dict,
    table: pd.DataFrame,
    fit_m,
    hold_m,
    names: Sequence[str],
    cats,
    cfg: Config,
    referral: bool,
    refit: bool | None = None,
    side_by_side: bool = True,
) -> dict:
    """{"ltv_own", "ltv_referral" (when `referral`)} boosters: fit rows, early stop on holdout rows, refit on both.

    Args:
        own_params: the own part's tuned LightGBM parameters, as `tune` returns them (leaf minimums
            rescaled to these fit rows); the referral part keeps the config's.
        table: the LTV table.
        fit_m: rows that fit (a boolean mask over `table`).
        hold_m: rows that early-stop (the held-back cutoff's).
        names: feature columns, model order.
        cats: the categorical ones.
        cfg: the config.
        referral: fit the referral part too.
        refit: refit on fit + holdout rows (None: `training.fit.refits` of these rows); the cross-fitted
            models pass the served model's choice, so they follow its recipe on their fewer rows.
        side_by_side: fit the parts side by side on one thread each (training/tuning.fold_map); False
            inside a caller that already runs fits side by side.
    """
    from training.fit import matrix, refit_booster, refits
    from training.tuning import Job, fold_map, rescale, threaded

    fit_i, hold_i = np.flatnonzero(np.asarray(fit_m)), np.flatnonzero(np.asarray(hold_m))
    n_tuned = int(own_params.get("_n_tuned", 0))
    own_params = {k: v for k, v in own_params.items() if not k.startswith("_")}
    own_params = rescale(own_params, n_tuned, len(fit_i)) if n_tuned else own_params
    X_fit, X_hold = matrix(table, names, fit_i), matrix(table, names, hold_i)
    tgt = lambda i, c: np.nan_to_num(table[c].to_numpy(dtype=float)[i])  # noqa: E731
    plan = {"ltv_own": tweedie_params(cfg, own_params)}
    if referral:
        plan["ltv_referral"] = tweedie_params(cfg)
    both = refits(cfg, len(X_fit) + len(X_hold)) if refit is None else refit  # the holdout cutoff is the nearest
    X_both = np.vstack([X_fit, X_hold]) if both else None

    def one(job: Job, threads: int):
        c = job.key
        b = fit_part(threaded(plan[c], threads), X_fit, tgt(fit_i, c), X_hold, tgt(hold_i, c), names, cats, cfg)
        if both:
            b = refit_booster(b, X_both, nonnegative(np.r_[tgt(fit_i, c), tgt(hold_i, c)]), names, cats)
        return b

    jobs = [Job(c, len(fit_i)) for c in plan]
    fits = fold_map(one, jobs) if side_by_side else [one(j, 0) for j in jobs]
    return {j.key: b for j, b in zip(jobs, fits)}


def cross_fitted(
    own_params: dict, table: pd.DataFrame, parts: dict, names: Sequence[str], cats, cfg: Config, referral: bool
) -> dict[str, np.ndarray]:
    """Predicted {"own", "referral", "ltv"} of the validation rows, each by the model fitted without its user group.

    Args:
        own_params: as `fit_parts`.
        table: the LTV table.
        parts: {"fit", "holdout", "validation"} row masks.
        names: feature columns, model order.
        cats: the categorical ones.
        cfg: the config.
        referral: with a referral part.
    """
    from training.fit import matrix, refits
    from training.tuning import Job, fold_map, threaded

    group = user_groups(table["user_id"], cfg.training.seed, cfg.ltv.cross_fit_groups)
    fit, hold = np.asarray(parts["fit"]), np.asarray(parts["holdout"])
    served = refits(cfg, int(fit.sum() + hold.sum()))
    val = np.asarray(parts["validation"])
    out = {p: np.full(int(val.sum()), np.nan) for p in ("own", "referral", "ltv")}

    def one(job: Job, threads: int) -> dict:
        others = group != job.key
        return fit_parts(
            threaded(own_params, threads), table, fit & others, hold & others, names, cats, cfg, referral, served, False
        )

    jobs = [Job(g, int((fit & (group != g)).sum())) for g in range(cfg.ltv.cross_fit_groups)]
    for job, boost in zip(jobs, fold_map(one, jobs)):  # the groups' fits side by side
        g = job.key
        model = LTVModel("ltv", "", 0, list(names), boost["ltv_own"], boost.get("ltv_referral"))
        pred = model.predict_parts(matrix(table, names, np.flatnonzero(val & (group == g))))
        for p in out:
            out[p][group[val] == g] = pred[p]
    return out
