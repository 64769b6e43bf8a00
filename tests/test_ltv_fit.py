"""LTV validation on unseen users (training/ltv_fit.py): a model cannot be judged on targets it was fitted on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import ltv_metrics as lm
from training.ltv_fit import cross_fitted, fit_parts, user_groups
from training.ltv_model import LTVModel
from training.select import Rows, make_folds


def _memorisable(n: int = 1500, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Each user's value is random and the same at every cutoff; `x` names the user and says nothing else."""
    rng = np.random.default_rng(seed)
    users, x, value = [f"u{i}" for i in range(n)], rng.random(n), rng.exponential(100.0, n)
    cuts = pd.date_range("2024-01-01", periods=4, freq="30D")
    t = pd.DataFrame({"user_id": np.tile(users, 4), "cutoff": np.repeat(cuts, n), "x": np.tile(x, 4)})
    t["ltv_own"], t["ltv_referral"] = np.tile(value, 4) * rng.uniform(0.9, 1.1, 4 * n), np.nan
    parts = {"fit": t.cutoff < cuts[2], "holdout": t.cutoff == cuts[2], "validation": t.cutoff == cuts[3]}
    return t, parts


def _memorising(cfg):
    lgbm = {**cfg.training.lgbm_params, "min_data_in_leaf": 2, "num_leaves": 255, "feature_fraction": 1.0}
    return cfg.model_copy(update={"training": cfg.training.model_copy(update={"lgbm_params": lgbm})})


def test_cross_fitted_predictions_cannot_recall_a_users_own_target(cfg):
    cfg = _memorising(cfg)
    t, parts = _memorisable()
    val = t[parts["validation"]]
    boost = fit_parts({}, t, parts["fit"], parts["holdout"], ["x"], [], cfg, referral=False)
    full = LTVModel("ltv", "", 0, ["x"], boost["ltv_own"], None).predict_parts(val[["x"]].to_numpy())
    crossed = cross_fitted({}, t, parts, ["x"], [], cfg, referral=False)
    y = val["ltv_own"].to_numpy()
    assert lm.gini(y, full["ltv"]) > 0.3  # the fit on every user recalls the validation users' values
    assert abs(lm.gini(y, crossed["ltv"])) < 0.1  # users unseen by their model: nothing to recall
    assert not np.isnan(crossed["ltv"]).any() and np.isnan(crossed["referral"]).all()


def test_user_groups_are_stable_and_balanced():
    ids = pd.Series([f"u{i}" for i in range(4000)])
    g = user_groups(ids, seed=1)
    assert (g == user_groups(ids, seed=1)).all() and not (g == user_groups(ids, seed=2)).all()
    assert 0.45 < g.mean() < 0.55 and set(user_groups(ids, 1, k=5)) == {0, 1, 2, 3, 4}
    assert user_groups(pd.Series(["u7", "u7"]), 1)[0] == user_groups(pd.Series(["u7"]), 1)[0]


@pytest.mark.parametrize("k", [2, 4])
def test_grouped_folds_judge_on_users_the_fit_did_not_see(k):
    t, _ = _memorisable(400)
    groups = user_groups(t["user_id"], 0, k)
    rows = Rows([np.c_[t["x"].to_numpy(), groups]], (t["ltv_own"] > 100).to_numpy(int), t["cutoff"].to_numpy())
    folds = make_folds(rows, 2, 30, 10_000, 0, groups)
    assert len(folds) == 2 * k  # each of the 2 fold cutoffs once per group
    for f in folds:
        g = f.X_eval[0, 1]
        assert (f.X_fit[:, 1] != g).all() and (f.X_es[:, 1] == g).all() and (f.X_eval[:, 1] == g).all()
    for c in {f.cutoff for f in folds}:  # every user of a fold cutoff is judged exactly once
        judged = np.concatenate([f.y_eval for f in folds if f.cutoff == c])
        assert len(judged) == int((t["cutoff"] == c).sum())


def test_ltv_rows_are_capped_to_a_seeded_sample_of_the_same_part():
    from training.fit import capped

    mask = np.arange(20) % 2 == 0
    kept = capped(mask, 4, seed=3)
    assert kept.sum() == 4 and not (kept & ~mask).any()
    assert (kept == capped(mask, 4, seed=3)).all()  # the same rows every run
    assert (capped(mask, 0, 3) == mask).all() and (capped(mask, 10, 3) == mask).all()


def test_the_spilled_ltv_table_keeps_what_train_ltv_fits_on(cfg):
    from training.ltv_train import capped_table

    t, parts = _memorisable(50)
    cuts = sorted(t["cutoff"].unique())
    small = cfg.model_copy(update={"ltv": cfg.ltv.model_copy(update={"max_fit_rows": 30})})
    kept = capped_table(t, cuts, small)
    per_cut = kept.groupby("cutoff").size()
    assert per_cut[cuts[-1]] == 50 and per_cut[cuts[-2]] == 30 and per_cut[per_cut.index < cuts[-2]].sum() == 30
    assert capped_table(t, cuts, cfg) is t  # under the cap: the same table, no copy


def test_cross_fitted_models_follow_the_served_models_refit_choice(cfg):
    """Past `training.refit_max_rows` the served LTV model is not refitted: nor are its judges on half the rows."""
    t, parts = _memorisable(300)
    n = int(parts["fit"].sum() + parts["holdout"].sum())  # 1200 rows; each user group has about half
    group = user_groups(t["user_id"], cfg.training.seed, cfg.ltv.cross_fit_groups)
    val = np.asarray(parts["validation"])

    def by_hand(c, refit):
        out = np.full(int(val.sum()), np.nan)
        for g in range(c.ltv.cross_fit_groups):
            others = group != g
            fit_m, hold_m = np.asarray(parts["fit"]) & others, np.asarray(parts["holdout"]) & others
            b = fit_parts({}, t, fit_m, hold_m, ["x"], [], c, False, refit)
            rows = val & (group == g)
            out[group[val] == g] = b["ltv_own"].predict(t.loc[rows, ["x"]].to_numpy())
        return out

    for limit, served_refits in ((n - 1, False), (n, True)):
        c = cfg.model_copy(update={"training": cfg.training.model_copy(update={"refit_max_rows": limit})})
        got = cross_fitted({}, t, parts, ["x"], [], c, referral=False)["ltv"]
        np.testing.assert_array_equal(got, by_hand(c, served_refits))
        assert not np.array_equal(got, by_hand(c, not served_refits))
