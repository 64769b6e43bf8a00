"""The push effect: control-group markers, the arms, the meta-learners, the contact rule, Qini (issue #17)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from events.loader import connect
from events.validate import run_validation, validate_frame
from siyu.config import default_config
from training.policy import advise, hold_mask, policy_outcomes
from training.scorer_files import load_dir
from training.uplift import arms_sql, attach_arms, fit_push_effect
from training.uplift_eval import compare_policies, decile_table, qini


def _frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "ts", "event"])


def test_holdout_markers_out_of_sequence_are_quarantined():
    rows = [
        ("a", "2025-01-01 10:00", "holdout_start"),
        ("a", "2025-01-01 10:00", "holdout_start"),  # an exact duplicate counts once, not as a nested start
        ("a", "2025-01-31", "holdout_end"),
        ("a", "2025-01-31", "holdout_start"),  # ends and restarts at one instant: both valid
        ("a", "2025-02-02", "holdout_start"),  # inside a holdout
        ("a", "2025-03-01", "holdout_end"),
        ("a", "2025-03-02", "holdout_end"),  # no open holdout
        ("b", "2025-01-02", "holdout_end"),  # an end without a start
        ("b", "2025-01-03", "follow"),
    ]
    ok, q = validate_frame(_frame(rows), default_config())
    assert sorted(q["source_row"]) == [5, 7, 8]
    assert dict(zip(q["source_row"], q["reason"])) == {
        5: "holdout_start inside a holdout",
        7: "holdout_end without holdout_start",
        8: "holdout_end without holdout_start",
    }
    assert len(ok) == 5


def test_arms_cover_the_horizon_and_spend_is_net():
    cfg = default_config()
    rows = [
        ("h", "2025-03-01 08:00", "holdout_start"),
        ("h", "2025-04-01 08:00", "holdout_end"),
        ("p", "2025-01-01", "holdout_start"),
        ("p", "2025-01-31", "holdout_end"),  # before the cutoff: pushed over the horizon
        ("o", "2025-03-16", "holdout_start"),  # still open at the end of the log: half the horizon
    ]
    ev = pd.DataFrame(
        rows + [("p", "2025-03-05", "purchase"), ("p", "2025-03-09", "refund"), ("p", "2025-04-05", "purchase")],
        columns=["user_id", "ts", "event"],
    )
    ev["amount"] = [None] * 5 + [100.0, 30.0, 50.0]
    con = connect(cfg=cfg)
    run_validation(con, ev, cfg, adapt_columns=False)
    got = con.execute(arms_sql([pd.Timestamp("2025-03-01")], 30)).df().set_index("user_id")
    assert got.loc["h", "held_share"] == pytest.approx(1.0 - 8 / (30 * 24), abs=1e-9)
    assert got.loc["o", "held_share"] == pytest.approx(0.5, abs=1e-9)
    assert "p" not in got.index or got.loc["p", "held_share"] == 0
    assert got.loc["p", "spend"] == pytest.approx(70.0)  # the April purchase is after the horizon


def _synthetic(n=4000, seed=0):
    """Rows with a known push effect: pushing lowers churn for responsive users, raises it for fatigued ones."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    held = rng.random(n) < 0.2
    tau = np.where(X[:, 0] > 1.0, 0.3, -0.25) + 0.05 * X[:, 1]  # push effect on churn
    base = 1 / (1 + np.exp(-(X[:, 2] - 0.5)))
    p = np.clip(base * 0.5 + np.where(held, 0.0, tau) + 0.25, 0.01, 0.99)
    churn = (rng.random(n) < p).astype(float)
    spend_tau = 10 * (X[:, 3] > 0)
    spend = rng.gamma(2.0, 5.0, n) + np.where(held, 0.0, spend_tau)
    return X, held, churn, spend, tau, spend_tau


@pytest.mark.parametrize("learner", ["s", "t", "x"])
def test_meta_learners_recover_a_known_effect_and_round_trip(learner, tmp_path):
    X, held, churn, spend, tau, spend_tau = _synthetic()
    cfg = default_config()
    cfg = cfg.model_copy(update={"uplift": cfg.uplift.model_copy(update={"learner": learner, "num_boost_round": 40})})
    names = ["a", "b", "c", "d"]
    m = fit_push_effect(X, churn, spend, held, cfg, names, "test-push")
    eff = m.effects(X)
    assert spearmanr(eff["churn"], tau).statistic > 0.5
    assert spearmanr(eff["spend"], spend_tau).statistic > 0.3
    back = load_dir(m.save(tmp_path / "model"))
    np.testing.assert_allclose(back.effects(X)["churn"], eff["churn"])
    np.testing.assert_allclose(back.predict_proba(X[:5]), eff["churn"][:5])


def test_contact_rule_holds_only_where_pushing_hurts_more_than_its_spend_is_worth():
    p = default_config().uplift.policy  # hold_above 0.02, churn_cost 100
    churn = np.array([0.10, 0.10, 0.01, -0.2, np.nan])
    spend = np.array([5.0, 50.0, -5.0, 3.0, 1.0])
    assert hold_mask(churn, spend, p).tolist() == [True, False, False, False, False]
    contact, reason, state = advise(churn, spend, np.array([5.0, 1.0, 2.5, np.nan, 0.0]), p)
    assert contact.tolist() == ["hold", "push", "push", "push", "push"]
    assert state.tolist() == ["fatigued", "rested", "tiring", "rested", "rested"]
    assert "raise the churn risk by 10.0 pts" in reason[0] and "fatigued" in reason[0]
    assert "outweighs" in reason[1] and "lower the churn risk" in reason[3] and "no push-effect" in reason[4]
    out = policy_outcomes(np.array([True, False]), [0.2, 0.1], [0.1, 0.3], [10.0, 20.0], [4.0, 8.0])
    assert out == {"churn": pytest.approx(0.1), "spend": pytest.approx(12.0), "held_share": 0.5}


def test_qini_rewards_the_true_ranking_and_not_a_random_one():
    X, held, churn, _, tau, _ = _synthetic(n=20000, seed=1)
    good = qini(tau, held, churn)["qini"]
    rand = qini(np.random.default_rng(2).random(tau.size), held, churn)["qini"]
    assert good > 0.01 and good > 5 * abs(rand)
    assert qini(-tau, held, churn)["qini"] < 0
    dec = decile_table(tau, held, churn, tau, bins=5)
    assert dec["realised"].iloc[0] > dec["realised"].iloc[-1] and dec["true"].is_monotonic_decreasing


def test_oracle_advice_is_judged_on_other_replicas_than_it_was_chosen_on():
    n = 400
    rng = np.random.default_rng(3)
    cols = {}
    for h in ("", "_a", "_b"):
        cols |= {f"churn_pushed{h}": rng.random(n) * 0.2, f"churn_held{h}": rng.random(n) * 0.2}
        cols |= {f"spend_pushed{h}": rng.random(n) * 20, f"spend_held{h}": rng.random(n) * 20}
    truth = pd.DataFrame(cols)
    noise_c = (truth["churn_pushed_a"] - truth["churn_held_a"]).to_numpy()
    noise_s = (truth["spend_pushed_a"] - truth["spend_held_a"]).to_numpy()
    r = compare_policies(noise_c, noise_s, truth, default_config().uplift.policy)
    # Half a's effects are pure noise here: the oracle's own advice chosen on them gains nothing on half b.
    assert abs(r["push_all_churn"] - r["oracle_advice_churn"]) < 0.02
    assert r["advice_held_share"] == r["oracle_advice_held_share"]
    assert r["hold_all_held_share"] == 1.0 and r["push_all_held_share"] == 0.0


def test_attach_arms_drops_partly_held_rows_and_the_rest_of_the_population():
    t = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "d"],
            "cutoff": pd.Timestamp("2025-03-01"),
            "in_churn_pop": [True, True, True, False],
            "churn": pd.array([1, 0, 1, pd.NA], dtype="Int8"),
        }
    )
    arms = pd.DataFrame(
        {"user_id": ["a", "b"], "cutoff": pd.Timestamp("2025-03-01"), "held_share": [0.95, 0.4], "spend": [0.0, 9.0]}
    )
    got = attach_arms(t, arms, 0.9)
    assert got["user_id"].tolist() == ["a", "c"] and got["arm"].tolist() == [1, 0] and got["spend"].tolist() == [0, 0]


def test_fit_rows_are_capped_per_arm_and_validation_rows_kept():
    """uplift.max_rows_per_arm: each arm's fit rows over all tables cut to a seeded sample; validation untouched."""
    from training.push_effect import capped_arms

    def table(n, held_every, val_from):
        pos = np.arange(n) * 2
        return (pos, (np.arange(n) % held_every == 0).astype(int), pos * 1.0, np.arange(n) < val_from)

    rows = [table(50, 5, 50), table(40, 4, 30)]  # fit: 50 + 30 rows (10 + 8 held); validation: 10 rows
    out = capped_arms(rows, cap=20, seed=3)
    fit_arm = np.concatenate([a[f] for _, a, _, f in out])
    assert (fit_arm == 0).sum() == 20 and (fit_arm == 1).sum() == 18  # the pushed arm cut, the held arm whole
    (pos, arm, _, f), (pos0, arm0, _, f0) = out[1], rows[1]
    assert pos[~f].tolist() == pos0[~f0].tolist() and arm[~f].tolist() == arm0[~f0].tolist()
    assert all((np.diff(p) > 0).all() and (s == p * 1.0).all() for p, _, s, _ in out)  # order and alignment kept
    again = capped_arms(rows, cap=20, seed=3)
    assert all((a[0] == b[0]).all() for a, b in zip(out, again))
    assert all((a[0] == b[0]).all() for a, b in zip(capped_arms(rows, cap=100, seed=3), rows))
