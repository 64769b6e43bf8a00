"""Model selection (issue #14): walk-forward folds, tuning, candidates, blend, bootstrap CIs and the gate."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from training_world import FEATURES, make_table, small_cfg

from training import bootstrap, model_registry
from training.calibrate import Calibrator
from training.fit import LabelData
from training.label import choose
from training.scorers import BlendScorer, BoosterScorer, LogisticScorer, RuleScorer, logit, scorer_from_json
from training.select import Fold, Rows, blend_weight, make_folds
from training.tuning import rescale, search_space

NAMES = [f.name for f in FEATURES]
RFM = [f.name for f in FEATURES if f.family in ("recency", "frequency", "monetary")]


def _split(table, cutoffs, label):
    ts = pd.to_datetime(table["cutoff"])
    part = {"fit": ts < cutoffs[-2], "holdout": ts == cutoffs[-2], "validation": ts == cutoffs[-1]}
    return LabelData.split(table, label, part, NAMES)


def test_selection_never_touches_the_validation_cutoff(tmp_path):
    """Poisoned validation labels and features change nothing the folds decide, and no fold reads that cutoff."""
    cfg = small_cfg(f"sqlite:///{tmp_path / 'x.db'}")
    table, cutoffs = make_table(400, 5, seed=2)
    poisoned = table.copy()
    val = poisoned.cutoff == cutoffs[-1]
    rng = np.random.default_rng(0)
    poisoned.loc[val, "promotion"] = pd.array(rng.integers(0, 2, int(val.sum())), dtype="Int64")
    poisoned.loc[val, "purchases_90d"] = 1000  # would move the logistic and the trees if seen
    a = choose("promotion", _split(table, cutoffs, "promotion"), cfg, FEATURES, RFM)
    b = choose("promotion", _split(poisoned, cutoffs, "promotion"), cfg, FEATURES, RFM)
    assert a.chosen == b.chosen and a.mean_auc == b.mean_auc and a.blend == b.blend
    assert {k: v for k, v in a.lgbm_params.items() if k != "_seconds"} == {
        k: v for k, v in b.lgbm_params.items() if k != "_seconds"
    }
    assert pd.Timestamp(cutoffs[-1]) not in a.cutoffs_seen and a.cutoffs_seen == [pd.Timestamp(c) for c in cutoffs[:-1]]
    assert a.trials == 4 and set(a.mean_auc) >= {"lightgbm", "logistic", "rule"}


def test_folds_are_rolling_origin_and_purge_the_horizon():
    n, cuts = 300, pd.date_range("2024-01-01", periods=5, freq="30D")
    rng = np.random.default_rng(1)
    cutoff = np.repeat(cuts.to_numpy(), n)
    rows = Rows([rng.normal(size=(len(cutoff), 3))], rng.integers(0, 2, len(cutoff)), cutoff)
    folds = make_folds(rows, 3, horizon_days=30, max_rows=10_000, seed=0)
    assert [f.cutoff for f in folds] == list(cuts[-3:])
    for f in folds:
        assert max(f.fit_cutoffs) < f.cutoff and len(f.y_eval) == n
    # labels that run 60 days must end before the fold's cutoff: one cutoff fewer to fit on
    purged = make_folds(rows, 3, horizon_days=60, max_rows=10_000, seed=0)
    for f in purged:
        assert all(c + pd.Timedelta(days=60) <= f.cutoff for c in f.fit_cutoffs)
    assert [len(f.fit_cutoffs) for f in purged] == [1, 2, 3]  # vs 2, 3, 4 with a 30-day horizon
    assert len(make_folds(rows, 3, 30, max_rows=100, seed=0)[0].y_eval) == 100  # capped per fold


def test_tuning_space_adapts_to_the_population_size():
    small, large = search_space(4_000), search_space(5_000_000)
    assert small["num_leaves"][1] < large["num_leaves"][1] <= 255
    assert small["min_data_in_leaf"][1] < 100 < large["min_data_in_leaf"][0]
    assert small["lambda_l2"][1] > large["lambda_l2"][1]  # few rows: stronger shrinkage allowed
    # leaf minimums tuned on a sample keep their share of the rows in the final fit
    assert rescale({"min_data_in_leaf": 20, "num_leaves": 31}, 60_000, 600_000) == {
        "min_data_in_leaf": 200,
        "num_leaves": 31,
    }


def test_blend_is_never_worse_than_its_members_on_its_folds():
    rng = np.random.default_rng(3)
    folds, a, b = [], [], []
    for _ in range(3):
        y = rng.integers(0, 2, 500)
        folds.append(Fold(pd.Timestamp("2024-01-01"), [], None, None, None, None, None, y))
        a.append(1 / (1 + np.exp(-(y + rng.normal(0, 1.2, 500)))))
        b.append(1 / (1 + np.exp(-(y + rng.normal(0, 1.5, 500)))))
    w, preds, score = blend_weight(folds, a, b)
    auc = lambda ps: np.mean([bootstrap.point(f.y_eval, p)["roc_auc"] for f, p in zip(folds, ps)])  # noqa: E731
    assert score >= max(auc(a), auc(b)) and score == pytest.approx(auc(preds))
    assert 0 < w < 1  # two independent noisy views: the mix is strictly better here


def test_scorers_round_trip_and_contributions_add_up():
    table, cutoffs = make_table(400, 3, seed=4)
    d = _split(table, cutoffs, "churn")
    y = d.fit["churn"].to_numpy()
    lr = LogisticScorer(RFM).fit(d.X_fit, y, NAMES)
    rule = RuleScorer("promotion", "tier_rank").fit(d.X_fit, d.fit["churn"].to_numpy(), NAMES)
    blend = BlendScorer([(lr, Calibrator("none")), (rule, Calibrator("platt", {"a": 0.5, "b": 0.1}))], [0.6, 0.4])
    for s in (lr, rule, RuleScorer("churn", "days_since_user_event").fit(d.X_fit, y, NAMES), blend):
        again = scorer_from_json(s.to_json())
        np.testing.assert_allclose(again.predict_proba(d.X_val), s.predict_proba(d.X_val))
        c = s.contributions(d.X_val)
        assert c.shape == (len(d.X_val), len(NAMES) + 1)
        np.testing.assert_allclose(c.sum(1), logit(s.predict_proba(d.X_val)), atol=1e-5)
    assert BoosterScorer.kind == "lightgbm"


def test_bootstrap_points_match_sklearn_and_intervals_cover_them():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    p = np.round(y * 0.3 + rng.random(400), 1)  # many ties
    pt = bootstrap.point(y, p)
    assert pt["roc_auc"] == pytest.approx(roc_auc_score(y, p)) and pt["pr_auc"] == pytest.approx(
        average_precision_score(y, p)
    )
    ci, res = bootstrap.with_ci(y, {"a": p, "b": p}, 200, 0, 0.95)
    assert ci["a"]["roc_auc_lo"] < pt["roc_auc"] < ci["a"]["roc_auc_hi"]
    assert bootstrap.difference(res, "a", "b", "roc_auc", 0.95) == (0.0, 0.0)  # paired: a tie is exactly 0


def test_a_capped_bootstrap_gives_the_full_rows_interval():
    """Resampling a 5,000-row sample of 40,000 rows, spread scaled to all of them, gives the full CI."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40_000)
    p, q = y * 0.5 + rng.random(40_000), y * 0.45 + rng.random(40_000)
    full_ci, full = bootstrap.with_ci(y, {"p": p, "q": q}, 200, 1, 0.95)
    capped_ci, capped = bootstrap.with_ci(y, {"p": p, "q": q}, 200, 1, 0.95, max_rows=5_000)
    for m in ("roc_auc", "pr_auc"):
        assert capped_ci["p"][m] == full_ci["p"][m]  # points are of every row
        width = full_ci["p"][f"{m}_hi"] - full_ci["p"][f"{m}_lo"]
        assert capped_ci["p"][f"{m}_hi"] - capped_ci["p"][f"{m}_lo"] == pytest.approx(width, rel=0.25)
        assert abs(np.median(capped["p"][m]) - full_ci["p"][m]) < width / 4
    lo_f, hi_f = bootstrap.difference(full, "p", "q", "roc_auc", 0.95)
    lo_c, hi_c = bootstrap.difference(capped, "p", "q", "roc_auc", 0.95)
    assert hi_c - lo_c == pytest.approx(hi_f - lo_f, rel=0.3) and lo_c > 0 and lo_f > 0
    # unscaled, the sample's spread would be sqrt(8) ~ 2.8 times as wide
    raw = bootstrap.resample(y[:5_000], {"p": p[:5_000]}, 200, 1)["p"]["roc_auc"]
    full_width = full_ci["p"]["roc_auc_hi"] - full_ci["p"]["roc_auc_lo"]
    assert np.subtract(*np.quantile(raw, [0.975, 0.025])) > 2 * full_width


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 300), st.sampled_from([None, 0, 1, 2]))
def test_every_resample_equals_sklearn_on_its_row_weights(seed, n, digits):
    """Each resample's metrics are sklearn's on that resample's Poisson row weights, with and without tied scores."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    p = y * 0.4 + rng.random(n)
    p = p if digits is None else np.round(p, digits)
    res = bootstrap.resample(y, {"p": p, "q": -p}, 3, seed)
    W = np.random.default_rng(seed).poisson(1.0, size=(3, n)).astype(float)  # resample()'s draws, in order
    for i, w in enumerate(W):
        if w[y == 1].sum() == 0 or w[y == 0].sum() == 0:
            assert np.isnan(res["p"]["roc_auc"][i])
            continue
        assert res["p"]["roc_auc"][i] == pytest.approx(roc_auc_score(y, p, sample_weight=w))
        assert res["q"]["roc_auc"][i] == pytest.approx(1 - roc_auc_score(y, p, sample_weight=w))
        assert res["p"]["pr_auc"][i] == pytest.approx(average_precision_score(y, p, sample_weight=w))


def test_gate_refuses_a_tie_and_a_loss_and_promotes_a_clear_win(tmp_path):
    """Against a registered champion on the same rows: equal scores never promote, clearly better ones do."""
    cfg = small_cfg(f"sqlite:///{tmp_path / 'g.db'}")
    table, cutoffs = make_table(600, 3, seed=6)
    d = _split(table, cutoffs, "churn")
    champ = LogisticScorer(RFM).fit(d.X_fit, d.fit["churn"].to_numpy(), NAMES)
    model_registry.use_experiment(cfg, "gate")
    with mlflow.start_run():
        v = model_registry.log_model(
            champ, Calibrator("none"), "churn", "siyu-churn", pd.DataFrame(d.X_val[:5], columns=NAMES), "logistic"
        )
    model_registry.promote(cfg, "churn", v)
    loaded = model_registry.load_model(cfg, "churn")
    assert loaded.kind == "logistic"
    y, p = d.val["churn"].to_numpy(), champ.predict_proba(d.X_val)
    np.testing.assert_allclose(loaded.predict_proba(d.X_val), p)
    judge = lambda q, fallback=False: model_registry.judge(  # noqa: E731
        cfg, "churn", v + 1, d.X_val, NAMES, y, q, {"logistic": p}, fallback
    )
    assert not judge(p).promoted  # a tie
    assert not judge(p * 0.5 + 0.25 * np.random.default_rng(0).random(len(p))).promoted  # worse
    oracle = d.val["_p_churn"].to_numpy()
    g = judge(oracle)
    assert g.promoted and g.ci[0] > 0 and g.champion_version == v
    # a best-baseline version replaces a champion that does not beat the baselines (here: it is one)
    assert judge(p, fallback=True).promoted


def test_blend_native_path_matches_predict_proba():
    """A blend champion's native path (serving/blendpath.py) gives predict_proba's numbers and additive reasons."""
    import lightgbm as lgb

    from serving.blendpath import BlendPath
    from serving.scoring import Scorer
    from training.scorer_files import CandidateModel

    table, cutoffs = make_table(400, 3, seed=6)
    d = _split(table, cutoffs, "churn")
    y = d.fit["churn"].to_numpy()
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 7}, lgb.Dataset(d.X_fit, y), 40)
    rule = RuleScorer("churn", "days_since_user_event").fit(d.X_fit, y, NAMES)
    members = [(BoosterScorer(booster), Calibrator("platt", {"a": 0.8, "b": -0.2})), (rule, Calibrator("none"))]
    blend = BlendScorer(members, [0.7, 0.3])
    model = CandidateModel("churn", "m", 1, NAMES, blend, Calibrator("platt", {"a": 1.1, "b": 0.05}), "blend")
    path = BlendPath.create(model)
    assert path is not None
    scorer = Scorer({"churn": model}, NAMES)
    for rows in (d.X_val[:1], d.X_val[:5], d.X_val):  # the single-row API and the batch call
        p, contrib = scorer._predict("churn", rows, reasons=True)
        np.testing.assert_allclose(p, model.predict_proba(rows), rtol=0, atol=1e-9)
        z = sum(w * logit(cal.apply(m.predict(rows))) for (m, cal), w in zip(blend.members, blend.weights))
        np.testing.assert_allclose(contrib.sum(1), z, atol=1e-4)
    # A blend whose numbers the path cannot reproduce keeps the plain path.
    broken = CandidateModel("churn", "m", 1, NAMES, blend, model.calibrator, "blend")
    broken.booster = BlendScorer(members, [0.7, 0.3])
    broken.booster.predict = lambda X, pred_contrib=False: np.full(len(X), 0.5)
    assert BlendPath.create(broken) is None


def test_auto_calibration_is_chosen_by_fold_log_loss():
    """`auto` keeps the lower fold log loss: isotonic when the raw scores bend, Platt when they don't."""
    from training.select import choose_calibration, log_loss

    rng = np.random.default_rng(3)

    def fold(bend: bool) -> tuple[Fold, tuple[np.ndarray, np.ndarray]]:
        raw = rng.uniform(0.01, 0.99, size=(2, 4000))
        # A step in the true rate: no logistic curve of the raw logit fits it, a step function does.
        truth = np.where(raw > 0.5, 0.6, 0.05) if bend else raw
        y = (rng.uniform(size=raw.shape) < truth).astype(int)
        z = np.zeros((4000, 1))
        return Fold(pd.Timestamp("2025-01-01"), [], z, y[0], z, y[1], z, y[0]), (raw[0], raw[1])

    for bend, want in ((True, "isotonic"), (False, "platt")):
        folds, raw = zip(*[fold(bend) for _ in range(3)])
        method, loss, preds = choose_calibration(folds, raw, "auto", 0)
        assert method == want, loss
        assert set(loss) == {"platt", "isotonic"}
        assert loss[method] == pytest.approx(np.mean([log_loss(f.y_eval, p) for f, p in zip(folds, preds)]))
    assert choose_calibration(folds, raw, "none", 0)[0] == "none"  # a configured method is kept
