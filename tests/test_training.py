"""Training: out-of-time split, calibration, baselines, oracle, MLflow logging, eligibility,
reproducibility and behaviour of the trained models (hand-made table shaped like training_table())."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from training_world import FEATURES, make_table, oracle_frame, small_cfg

from siyu.errors import SiyuError
from training import evaluate, model_registry
from training.baselines import oracle_scores, rule_scores
from training.calibrate import Calibrator, fit_calibrator
from training.fit import LabelData, fit_label, lgbm_params
from training.train import train_table

NAMES = [f.name for f in FEATURES]


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """One throwaway sqlite store for the module (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def world(uri):
    """One training on the hand-made world."""
    cfg = small_cfg(uri)
    table, cutoffs = make_table(600, 4, seed=1)
    result = train_table(table, cutoffs, cfg, FEATURES, experiment="t", oracle=oracle_frame(table))
    return cfg, table, cutoffs, result


def _split(table, cutoffs, label):
    ts = pd.to_datetime(table["cutoff"])
    part = {"fit": ts < cutoffs[-2], "holdout": ts == cutoffs[-2], "validation": ts == cutoffs[-1]}
    return LabelData.split(table, label, part, NAMES)


def test_split_is_out_of_time_and_by_population():
    table, cutoffs = make_table(200, 4)
    d = _split(table, cutoffs, "churn")
    assert set(d.val.cutoff) == {cutoffs[-1]} and set(d.holdout.cutoff) == {cutoffs[-2]}
    assert set(d.fit.cutoff) == set(cutoffs[:-2])
    assert d.val["in_churn_pop"].all() and d.fit["churn"].notna().all()
    assert len(d.val) == int(table[(table.cutoff == cutoffs[-1]) & table.in_churn_pop].shape[0])


def test_fit_and_held_back_rows_are_capped_by_a_seeded_sample_validation_kept():
    """`training.max_fit_rows` cuts the fit rows and the held-back rows: the same for one seed."""
    table, cutoffs = make_table(200, 4)
    ts = pd.to_datetime(table["cutoff"])
    part = {"fit": ts < cutoffs[-2], "holdout": ts == cutoffs[-2], "validation": ts == cutoffs[-1]}
    whole = LabelData.split(table, "churn", part, NAMES)
    cap = len(whole.fit) // 3
    a, b = (LabelData.split(table, "churn", part, NAMES, None, cap, 7) for _ in range(2))
    other = LabelData.split(table, "churn", part, NAMES, None, cap, 8)
    assert len(a.fit) == len(a.X_fit) == cap and a.fit.equals(b.fit)
    assert not a.fit.equals(other.fit)
    assert set(a.fit.cutoff) == set(cutoffs[:-2])  # every older cutoff keeps rows
    assert a.val.equals(whole.val) and len(a.holdout) == min(cap, len(whole.holdout))
    np.testing.assert_array_equal(a.X_val, whole.X_val)
    wide = LabelData.split(table, "churn", part, NAMES, None, len(whole.holdout), 7)
    assert wide.holdout.equals(whole.holdout) and len(wide.fit) == len(whole.holdout) < len(whole.fit)
    at = whole.fit.reset_index().merge(a.fit, on=["user_id", "cutoff"], sort=False)["index"].to_numpy()
    assert len(at) == cap and (np.diff(at) > 0).all()  # a subset of the rows, in table order
    assert LabelData.split(table, "churn", part, NAMES, None, len(whole.fit), 7).fit.equals(whole.fit)


def test_validation_labels_never_touch_the_model(tmp_path):
    """Early stopping and calibration use the held-back cutoff: scrambling validation labels changes nothing."""
    cfg = small_cfg(f"sqlite:///{tmp_path / 'x.db'}")
    table, cutoffs = make_table(300, 4, seed=3)
    scrambled = table.copy()
    val = scrambled.cutoff == cutoffs[-1]
    scrambled.loc[val, "churn"] = 1 - scrambled.loc[val, "churn"]
    a = fit_label("churn", _split(table, cutoffs, "churn"), cfg, FEATURES)
    b = fit_label("churn", _split(scrambled, cutoffs, "churn"), cfg, FEATURES)
    assert a[0].best_iteration == b[0].best_iteration
    np.testing.assert_array_equal(a[3], b[3])


def test_early_stopping_reads_only_its_sample_of_the_held_back_rows(tmp_path):
    """With `early_stopping_max_rows`, held-back labels outside its seeded sample do not move the stopping round."""
    from training.fit import capped

    table, cutoffs = make_table(300, 4, seed=3)
    d = _split(table, cutoffs, "churn")
    cap = len(d.holdout) // 2
    cfg = small_cfg(f"sqlite:///{tmp_path / 'x.db'}", refit_all_cutoffs=False, early_stopping_max_rows=cap)
    outside = ~capped(np.ones(len(d.holdout), bool), cap, cfg.training.seed)
    other = _split(table, cutoffs, "churn")
    other.holdout.loc[outside, "churn"] = 1 - other.holdout.loc[outside, "churn"]
    a, b = (fit_label("churn", x, cfg, FEATURES)[0] for x in (d, other))
    assert a.model_to_string() == b.model_to_string()
    every = small_cfg(f"sqlite:///{tmp_path / 'x.db'}", refit_all_cutoffs=False, early_stopping_max_rows=0)
    c, e = (fit_label("churn", x, every, FEATURES)[0] for x in (d, other))
    assert c.best_iteration != e.best_iteration or c.model_to_string() != e.model_to_string()


def test_refit_adds_the_holdout_rows_only_below_the_row_limit(tmp_path):
    """The refit (fit + holdout cutoffs, early-stopped rounds) runs up to `refit_max_rows` rows, not past it."""
    table, cutoffs = make_table(300, 4, seed=3)
    d = _split(table, cutoffs, "churn")
    n = len(d.fit) + len(d.holdout)
    out = {}
    for limit in (n, n - 1, 0):
        cfg = small_cfg(f"sqlite:///{tmp_path / 'x.db'}", refit_all_cutoffs=True, refit_max_rows=limit)
        out[limit] = fit_label("churn", d, cfg, FEATURES)
    early = out[n - 1][0]  # not refitted: the early-stopped booster itself
    assert early.best_iteration > 0
    for refit in (out[n][0], out[0][0]):  # refitted: exactly the early-stopped rounds, no early stopping
        assert refit.current_iteration() == early.best_iteration and refit.best_iteration <= 0
        assert not np.array_equal(refit.predict(d.X_val), early.predict(d.X_val))
    np.testing.assert_array_equal(out[n][2], out[0][2])


def test_lgbm_params_imbalance_and_monotone(cfg):
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"monotone_extra": {}})})
    p = lgbm_params("churn", cfg, FEATURES, n_pos=100, n_neg=900)
    assert cfg.training.class_weight == "sqrt" and p["scale_pos_weight"] == pytest.approx(3.0)
    full = cfg.model_copy(update={"training": cfg.training.model_copy(update={"class_weight": "balanced"})})
    assert lgbm_params("churn", full, FEATURES, 100, 900)["scale_pos_weight"] == pytest.approx(9.0)
    assert p["monotone_constraints"] == [0, 0, 0, 0, 1, 1, 0, 0]
    off = cfg.model_copy(
        update={"training": cfg.training.model_copy(update={"monotone": False, "class_weight": "none"})}
    )
    p = lgbm_params("churn", off, FEATURES, 100, 900)
    assert "monotone_constraints" not in p and "scale_pos_weight" not in p


def test_registry_constraints_cover_complaints_mutes_and_referrals(cfg):
    """Every count that a complaint or mute raises is constrained up for churn; every count or sum
    that a referral purchase raises is constrained up for KOC (registry hints + training.monotone_extra)."""
    from features.catalog import features_of

    feats = features_of(cfg)
    names = [f.name for f in feats]
    churn = dict(zip(names, lgbm_params("churn", cfg, feats, 1, 1)["monotone_constraints"]))
    koc = dict(zip(names, lgbm_params("koc", cfg, feats, 1, 1)["monotone_constraints"]))
    friction = [n for n in names if n.startswith(("n_complaint", "n_mute", "n_friction"))]
    referral = [n for n in names if n.startswith(("n_referral", "referred_revenue", "n_advocacy"))]
    assert len(friction) >= 5 and len(referral) >= 5
    assert {n: churn[n] for n in friction} == {n: 1 for n in friction}
    assert {n: koc[n] for n in referral} == {n: 1 for n in referral}
    bad = cfg.model_copy(update={"training": cfg.training.model_copy(update={"monotone_extra": {"koc": {"nope": 1}}})})
    with pytest.raises(SiyuError, match="unknown feature"):
        lgbm_params("koc", bad, feats, 1, 1)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibrator_is_monotone_and_round_trips(method):
    rng = np.random.default_rng(0)
    raw = rng.random(2000)
    y = (rng.random(2000) < raw**2).astype(int)  # raw overstates the rate, like a class-weighted model
    cal = fit_calibrator(raw, y, method)
    grid = np.linspace(0, 1, 101)
    out = cal.apply(grid)
    assert np.all(np.diff(out) >= -1e-12)
    assert (
        evaluate.probability_metrics(y, cal.apply(raw))["log_loss"] < evaluate.probability_metrics(y, raw)["log_loss"]
    )
    np.testing.assert_allclose(Calibrator.from_dict(cal.to_dict()).apply(grid), out)


def test_lift_and_catch_rate_by_hand():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 1])
    p = np.linspace(1, 0, 10)  # first rows scored highest
    m = evaluate.lift_metrics(y, p, (0.2, 0.5))
    assert m["catch_top20"] == pytest.approx(2 / 3) and m["lift_top20"] == pytest.approx(1.0 / 0.3)
    assert m["catch_top50"] == pytest.approx(2 / 3) and m["lift_top50"] == pytest.approx(0.4 / 0.3)


def test_baselines_rule_and_oracle_alignment():
    fit = pd.DataFrame({"tier": ["buyer", "buyer", "engaged", "engaged"], "koc": [1, 0, 0, 0]})
    val = pd.DataFrame({"tier": ["engaged", "buyer", "repeat"], "user_id": ["a", "b", "c"], "d": [1.0, np.nan, 3.0]})
    np.testing.assert_allclose(rule_scores("koc", fit, val, "d"), [0.0, 0.5, 0.25])
    assert rule_scores("churn", fit, val, "d").tolist() == [1.0, 4.0, 3.0]  # never active = longest gap
    oracle = pd.DataFrame(
        {"cutoff": pd.Timestamp("2024-03-01"), "user_id": ["b", "a"], "label": "koc", "p_oracle": [0.2, 0.1]}
    )
    np.testing.assert_allclose(oracle_scores(oracle, "koc", "2024-03-01", val), [0.1, 0.2, np.nan])
    assert oracle_scores(oracle, "churn", "2024-03-01", val) is None


def test_training_result_metrics_baselines_oracle(world):
    _, _, _, result = world
    for label in ("churn", "promotion", "koc"):
        r = result.labels[label]
        assert r.trained, r.message
        for k in (
            "roc_auc",
            "pr_auc",
            "log_loss",
            "brier",
            "lift_top5",
            "catch_top10",
            "catch_top20",
            "auc_tier_buyer",
        ):
            assert np.isfinite(r.metrics[k]), k
        assert set(r.baselines) == {"rule", "logistic"}
        for m in (r.metrics, *r.baselines.values()):
            assert m["roc_auc_lo"] <= m["roc_auc"] <= m["roc_auc_hi"]
            assert m["pr_auc_lo"] <= m["pr_auc"] <= m["pr_auc_hi"]
        # beats_baselines: a model (not a baseline) whose paired-bootstrap lower bound over every baseline
        # clears the margin; loudness and the served scorer follow it
        beats = r.selection.chosen not in ("rule", "logistic") and all(lo > 0 for lo, _ in r.versus.values())
        assert r.beats_baselines == beats
        assert any(label in w for w in result.warnings()) == (not beats)
        assert r.scorer == (r.selection.chosen if beats else r.selection.best_baseline())
        o = r.oracle
        assert (
            o["oracle_users"]
            == result.labels[label].counts["validation_pos"] + result.labels[label].counts["validation_neg"]
        )
        assert o["auc_ratio_to_oracle"] == pytest.approx(o["model_roc_auc_on_oracle_users"] / o["oracle_roc_auc"])
    assert result.labels["churn"].metrics["roc_auc"] > 0.7  # the world has strong churn signal
    # class weights overstate the rare class; calibration must bring the probabilities back
    r = result.labels["promotion"]
    if r.selection.chosen == "lightgbm":
        assert r.metrics["log_loss"] < r.raw_metrics["log_loss"] and r.metrics["brier"] < r.raw_metrics["brier"]


def test_mlflow_parent_and_child_runs(world):
    cfg, _, cutoffs, result = world
    model_registry.use_tracking(cfg)
    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["validation_cutoff"] == f"{cutoffs[-1]:%Y-%m-%d}"
    assert parent.data.params["cfg.training.seed"] == "42" and int(parent.data.params["rows_validation"]) == 600
    assert parent.data.params["features"].split(",") == NAMES
    assert "config/resolved_config.json" in [a.path for a in client.list_artifacts(parent.info.run_id, "config")]
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.params["label"] for c in children) == ["churn", "koc", "promotion"]
    child = next(c for c in children if c.data.params["label"] == "churn")
    for k in (
        "roc_auc",
        "pr_auc",
        "brier",
        "log_loss",
        "raw_log_loss",
        "lift_top10",
        "rule_roc_auc",
        "logistic_pr_auc",
        "roc_auc_lo",
        "logistic_roc_auc_hi",
        "cv_logistic_roc_auc_mean",
        "cv_rule_roc_auc_fold0",
        "oracle_roc_auc",
        "auc_ratio_to_oracle",
        "gate_challenger_roc_auc",
    ):
        assert k in child.data.metrics, k
    assert child.data.metrics["roc_auc"] == pytest.approx(result.labels["churn"].metrics["roc_auc"])
    assert child.data.tags["siyu.gate"] == "promoted"
    files = {a.path.split("/")[-1] for a in client.list_artifacts(child.info.run_id, "evaluation")}
    assert {
        "churn_roc_pr.png",
        "churn_calibration.png",
        "churn_feature_importance.csv",
        "churn_shap_summary.png",
    } <= files


def test_monotone_behaviour_of_trained_models(world):
    """More complaints or mutes never lower churn risk; an extra referral purchase never lowers KOC likelihood."""
    cfg, table, cutoffs, _ = world
    X = table.loc[table.cutoff == cutoffs[-1], NAMES].astype(float).to_numpy()
    churn, koc = model_registry.load_model(cfg, "churn"), model_registry.load_model(cfg, "koc")
    base_c, base_k = churn.predict_proba(X), koc.predict_proba(X)
    for col in ("complaints_90d", "mutes_90d"):
        j = NAMES.index(col)
        for extra in (1, 3):
            Xm = X.copy()
            Xm[:, j] += extra
            assert np.all(churn.predict_proba(Xm) >= base_c - 1e-12), (col, extra)
    Xr = X.copy()
    Xr[:, NAMES.index("referral_purchases_90d")] += 1
    assert np.all(koc.predict_proba(Xr) >= base_k - 1e-12)
    assert koc.predict_proba(Xr).mean() > base_k.mean()  # and the signal is really used


def test_same_inputs_same_metrics(world):
    cfg, table, cutoffs, first = world
    again = train_table(table, cutoffs, cfg, FEATURES, experiment="t")
    for label in ("churn", "promotion", "koc"):
        assert again.labels[label].metrics == first.labels[label].metrics
        assert again.labels[label].baselines == first.labels[label].baselines


def test_too_little_data_skips_one_label_and_trains_the_rest(uri):
    table, cutoffs = make_table(300, 3, seed=5)
    koc_rows = table["koc"].notna()
    table.loc[koc_rows, "koc"] = 0
    table.loc[table.index[koc_rows][:7], "koc"] = 1  # 7 positives in the whole table
    cfg = small_cfg(uri)
    result = train_table(table, cutoffs, cfg, FEATURES, experiment="t")
    r = result.labels["koc"]
    assert not r.trained and "min_class_count=20" in r.message and "train_pos=" in r.message
    assert result.labels["churn"].trained and result.labels["promotion"].trained
    assert any(w.startswith("koc: skipped") for w in result.warnings())


def test_losing_to_the_rule_is_loud(uri):
    """Churn decided by inactivity alone: the operator rule is perfect, the model cannot beat it."""
    table, cutoffs = make_table(300, 3, seed=7)
    pop = table["in_churn_pop"]
    table.loc[pop, "churn"] = (table.loc[pop, "days_since_user_event"] > 20).astype(int)
    cfg = small_cfg(uri)
    result = train_table(table, cutoffs, cfg, FEATURES, experiment="t")
    assert result.labels["churn"].baselines["rule"]["roc_auc"] == pytest.approx(1.0)
    assert result.labels["churn"].beats_baselines is False
    assert any("churn: MODEL DOES NOT BEAT THE BASELINES" in w for w in result.warnings())
    model_registry.use_tracking(cfg)
    child = mlflow.get_run(result.labels["churn"].run_id)
    assert "does not beat the baselines" in child.data.tags["siyu.warning"]
    assert "churn" in mlflow.get_run(result.parent_run_id).data.tags["siyu.warning"]
    # the gate refuses the losing model: the best baseline (on the folds) is registered and serves
    r = result.labels["churn"]
    assert r.scorer == "rule" == child.data.tags["siyu.scorer"] and r.gate.promoted, r.gate.reason
    served = model_registry.load_version(cfg, "churn", r.version)
    assert served.kind == "rule" and model_registry.resolve_alias(cfg, "churn", "champion") == r.version
    # the folds already chose the rule: the warning says so, and does not compare the rule with itself
    assert r.selection.chosen == "rule"
    (w,) = [w for w in result.warnings() if w.startswith("churn:")]
    assert "the folds chose the baseline 'rule', which serves" in w and "rule - logistic: CI" in w, w
    assert "rule - rule" not in w and "model - " not in w, w


@pytest.mark.slow
def test_behaviour_on_a_simulated_world(tmp_path, cfg):
    """Real features from the simulator: one or three more complaints/mutes (every count they raise) never
    lower churn risk; one more referral purchase (every count and sum it raises) never lowers KOC likelihood."""
    import duckdb

    from events.validate import load_valid_events
    from simulation.simulator import simulate_world
    from training.table import training_cutoffs, training_table
    from training.train import train_all

    simulate_world(cfg, users=4000, days=240, out_dir=tmp_path / "w", replicas=0)
    events = tmp_path / "w" / "events.parquet"
    t = cfg.training.model_copy(update={"min_class_count": 5})
    cfg = cfg.model_copy(
        update={
            "training": t,
            "mlflow": cfg.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"}),
        }
    )
    result = train_all(events, cfg, experiment="behaviour")
    assert result.labels["churn"].trained and result.labels["koc"].trained, result.warnings()
    con = duckdb.connect()
    load_valid_events(con, events, cfg)
    val = training_table(con, training_cutoffs(con, cfg)[-1:], cfg)
    churn, koc = model_registry.load_model(cfg, "churn"), model_registry.load_model(cfg, "koc")
    names = churn.feature_names
    X = val[names].astype("float64").to_numpy(na_value=np.nan)
    friction = [names.index(n) for n in names if n.startswith(("n_complaint", "n_mute", "n_friction"))]
    base = churn.predict_proba(X)
    for k in (1, 3):
        Xm = X.copy()
        Xm[:, friction] = np.nan_to_num(Xm[:, friction]) + k
        assert np.all(churn.predict_proba(Xm) >= base - 1e-12)
    counts = [names.index(n) for n in names if n.startswith(("n_referral", "n_advocacy"))]
    money = [names.index(n) for n in names if n.startswith("referred_revenue")]
    Xr = X.copy()
    Xr[:, counts] = np.nan_to_num(Xr[:, counts]) + 1
    Xr[:, money] = np.nan_to_num(Xr[:, money]) + 100.0
    assert np.all(koc.predict_proba(Xr) >= koc.predict_proba(X) - 1e-12)


def _rows(df: pd.DataFrame) -> list[dict]:
    """Events as the API receives them: text cells, missing values absent."""
    out = []
    for r in df.to_dict("records"):
        out.append({c: (str(v).lower() if isinstance(v, bool) else str(v)) for c, v in r.items() if not pd.isna(v)})
    return out


@pytest.mark.parametrize("event", ["complaint", "mute"])
def test_more_friction_in_the_log_never_lowers_churn_risk(event):
    """Learned behaviour on the raw signal, end to end: real events -> the real feature code -> the trained
    champion. Adding complaints (or mutes) to users' logs, at the time of their last user-side event so
    recency and active days stay as they were, must not lower anyone's churn risk."""
    from serving_world import serving_world

    from serving.predictor import Predictor

    w = serving_world()
    pred = Predictor.load(w.cfg, str(w.scores))
    ev = pd.read_parquet(w.events)
    ev = ev[ev.ts <= w.asof]
    from siyu.contract import BRAND_EVENTS

    last = ev[~ev.event.isin(BRAND_EVENTS)].groupby("user_id").ts.max()  # user-side: not pushes nor holdout markers
    users = sorted(np.random.default_rng(3).choice(last.index.to_numpy(), size=80, replace=False))
    base = ev[ev.user_id.isin(users)]
    before = {i["user_id"]: i["p_churn"] for i in pred.predict_events(_rows(base), w.asof)[0]}
    scored = [u for u in users if before[u] is not None]
    assert len(scored) >= 40, "too few users in the churn population to test anything"
    extra = pd.DataFrame({"user_id": last[users].index, "ts": last[users].to_numpy(), "event": event})
    for times in (1, 3):
        more = pd.concat([base] + [extra.assign(content_id=f"added{k}") for k in range(times)], ignore_index=True)
        after = {i["user_id"]: i["p_churn"] for i in pred.predict_events(_rows(more), w.asof)[0]}
        fell = {u: (before[u], after[u]) for u in scored if after[u] < before[u] - 1e-9}
        assert not fell, f"{times} more {event}(s) lowered {len(fell)} users' churn risk: {list(fell.items())[:3]}"
