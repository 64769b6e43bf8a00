"""Scoring: percentiles, buckets, reasons, path attributions, batch snapshot, batch/API parity."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serving_world import serving_world

from serving.scoring import buckets, format_value, percentiles, reference, top_reasons
from siyu.contract import LABELS
from siyu.errors import SiyuError


@pytest.fixture(scope="module")
def world():
    return serving_world()


@pytest.fixture(scope="module")
def snap(world):
    return pd.read_parquet(world.scores)


@pytest.fixture(scope="module")
def scorer(world):
    from features.catalog import feature_names
    from serving.pool import load_champions
    from serving.scoring import Scorer

    return Scorer(load_champions(world.cfg), feature_names(world.cfg))


def test_percentiles_and_buckets():
    ref = reference(np.array([0.1, 0.2, np.nan, 0.3, 0.4]))
    assert ref.tolist() == [0.1, 0.2, 0.3, 0.4]
    pct = percentiles(np.array([0.05, 0.2, 0.4, 0.9, np.nan]), ref)
    assert pct[:4].tolist() == [0.0, 37.5, 87.5, 100.0] and np.isnan(pct[4])  # a tie counts half
    # a score the whole pool shares (a rule's 0 for a label the log cannot show) is in the middle, not "high"
    assert percentiles(np.zeros(3), reference(np.zeros(10))).tolist() == [50.0, 50.0, 50.0]
    b = buckets(np.array([0.0, 49.9, 50.0, 79.99, 80.0, 100.0, np.nan]), {"low": 0.0, "medium": 0.5, "high": 0.8})
    assert b.tolist() == ["low", "low", "medium", "medium", "high", "high", None]


def test_top_reasons_order_by_absolute_contribution():
    contrib = np.array([[0.1, -0.5, 0.3, 0.0, 9.0], [0.0, 0.0, 0.0, -0.2, 9.0]])  # last column: bias
    idx, c = top_reasons(contrib)
    assert idx.tolist() == [[1, 2, 0], [3, 0, 1]]
    assert c[0].tolist() == [-0.5, 0.3, 0.1]


def test_format_value():
    assert format_value(12.0, "days") == "12 days"
    assert format_value(0.12345, "ratio") == "0.123"
    assert format_value(float("nan"), "days").startswith("unknown")


def test_path_contributions_decompose_the_raw_score(scorer, world):
    """Rows of the path attributions sum to LightGBM's raw score, and the fast probability equals predict_proba."""
    from serving.snapshot import load_snapshot

    s = load_snapshot(world.scores)
    for lab, model in scorer.models.items():
        X = s.X[:, scorer._cols[lab]][:200]
        c = scorer._explainers[lab].contributions(X)
        np.testing.assert_allclose(c.sum(axis=1), model.booster.predict(X, raw_score=True), atol=1e-4)
        p, _ = scorer._predict(lab, X, reasons=True)
        np.testing.assert_allclose(p, model.predict_proba(X), atol=1e-9)


def test_snapshot_contents(world, snap):
    from events.loader import connect
    from events.validate import load_valid_events
    from features.catalog import feature_names
    from features.compute import feature_table
    from training.model_registry import resolve_alias

    con = connect()
    load_valid_events(con, world.events, world.cfg)
    feats = feature_table(con, world.asof, world.cfg)
    assert sorted(snap.user_id) == sorted(feats.user_id.astype(str))
    merged = feats.set_index("user_id").loc[snap.user_id]
    for f in feature_names(world.cfg)[:20]:
        np.testing.assert_array_equal(snap[f"x.{f}"].to_numpy(float), merged[f].to_numpy(float))
    assert (snap["asof"] == pd.Timestamp(world.asof)).all()
    for lab in LABELS:
        p, pop = snap[f"p_{lab}"], snap[f"in_{lab}_pop"]
        assert p[~pop].isna().all(), "scores outside the population must be null"
        if snap[f"version_{lab}"].notna().any():
            assert snap[f"version_{lab}"].iloc[0] == resolve_alias(world.cfg, lab)
            assert p[pop].between(0, 1).all() and snap[f"pct_{lab}"][pop].between(0, 100).all()
            assert set(snap[f"bucket_{lab}"][pop]) <= set(world.cfg.scoring.buckets)
            reasons = snap[f"reasons_{lab}"][pop]
            assert all(len(r) == 3 for r in reasons)
    assert (snap.p_churn.notna() | snap.p_promotion.notna()).any()


def test_populations_match_the_label_code(world, snap):
    """Batch scoring's populations are the ones the training labels use (features.labels)."""
    from events.loader import connect
    from events.validate import load_valid_events
    from features.labels import label_table

    con = connect()
    load_valid_events(con, world.events, world.cfg)
    lab = label_table(con, world.asof, world.cfg).set_index("user_id").loc[snap.user_id]
    for label in LABELS:
        assert (lab[f"in_{label}_pop"].to_numpy(bool) == snap[f"in_{label}_pop"].to_numpy(bool)).all()
    assert (lab["tier"].to_numpy() == snap["tier"].to_numpy()).all()


def test_api_scores_equal_batch_scores(world, snap):
    """The API path (snapshot lookup, and raw events through the same feature code) reproduces batch."""
    from serving.predictor import Predictor

    pred = Predictor.load(world.cfg, str(world.scores))
    some = snap[snap.in_churn_pop].user_id.head(5).tolist()
    items = pred.predict_ids(some + ["nobody"])
    assert items[-1] == {"user_id": "nobody", "status": "unknown_user"}
    by_id = snap.set_index("user_id")
    for item in items[:-1]:
        row = by_id.loc[item["user_id"]]
        assert item["tier"] == row.tier
        assert item["p_churn"] == pytest.approx(row.p_churn, abs=1e-9)
        assert item["churn"]["percentile"] == pytest.approx(row.pct_churn, abs=0.01)
        assert [r["feature"] for r in item["churn"]["reasons"]] == [r["feature"] for r in row.reasons_churn]
    events = pd.read_parquet(world.events)
    mine = events[events.user_id.isin(some[:2]) & (events.ts <= world.asof)]
    rows = [
        {k: (None if pd.isna(v) else (v.isoformat() if isinstance(v, pd.Timestamp) else v)) for k, v in r.items()}
        for r in mine.to_dict("records")
    ]
    got, asof = pred.predict_events(rows, world.asof)
    assert asof == world.asof
    for item in got:
        assert item["p_churn"] == pytest.approx(by_id.loc[item["user_id"]].p_churn, abs=1e-9)


def test_json_answer_is_byte_identical_to_the_dict_answer(world, snap):
    """The API's pre-rendered JSON equals json.dumps of predict_ids (all users, unknown ids, nulls)."""
    import json

    from serving.predictor import Predictor

    pred = Predictor.load(world.cfg, str(world.scores))
    ids = ["nobody"] + snap.user_id.tolist() + ['q"uote\\ü']
    text, tiers, scores = pred.predict_ids_json(ids)
    items = pred.predict_ids(ids)
    assert text == json.dumps(items, allow_nan=False, separators=(",", ":"))
    ok = [i for i in items if i["status"] == "ok"]
    assert tiers == [i["tier"] for i in ok]
    for lab, p in scores.items():
        assert np.array_equal(p, [np.nan if i[f"p_{lab}"] is None else i[f"p_{lab}"] for i in ok], equal_nan=True)
    assert pred.predict_ids_json(["nobody"])[0] == '[{"user_id":"nobody","status":"unknown_user"}]'


def test_json_renderer_escapes_and_special_values():
    """Names and meanings needing escapes, NaN / -0.0 / huge values, and an empty population render like json.dumps."""
    import json
    from types import SimpleNamespace

    from serving.render import JsonRenderer
    from serving.scoring import ReasonFormatter

    feats = [
        SimpleNamespace(name='a"b', meaning='100% 复购 "x"\\', unit="days"),
        SimpleNamespace(name="c", meaning="", unit="currency"),
        SimpleNamespace(name="d", meaning="d", unit=""),
    ]
    fmt = ReasonFormatter(feats)
    X = np.array([[np.nan, -0.0, 1.5e15], [0.0, 12345.678, -2.0]])
    idx = np.array([[0, 1, 2], [2, -1, -1]])
    con = np.array([[0.5, -0.25, 1e-9], [-3.0, 0.0, 0.0]])
    p, pct = np.array([0.25, np.nan]), np.array([33.333, np.nan])
    cols = {"churn": (p, pct, np.array(["low", None], dtype=object), idx, con)}
    text = JsonRenderer(fmt).items(["u1", "u2", "zz"], [0, 1, -1], np.array(["buyer", "lost"], dtype=object), X, cols)
    want = [
        {
            "user_id": "u1",
            "status": "ok",
            "tier": "buyer",
            "p_churn": 0.25,
            "p_promotion": None,
            "p_koc": None,
            "churn": {
                "probability": 0.25,
                "percentile": 33.33,
                "bucket": "low",
                "reasons": [fmt.item("churn", j, X[0, j], con[0, k]) for k, j in enumerate(idx[0])],
            },
            "promotion": None,
            "koc": None,
        },
        {
            "user_id": "u2",
            "status": "ok",
            "tier": "lost",
            "p_churn": None,
            "p_promotion": None,
            "p_koc": None,
            "churn": None,
            "promotion": None,
            "koc": None,
        },
        {"user_id": "zz", "status": "unknown_user"},
    ]
    assert text == json.dumps(want, allow_nan=False, separators=(",", ":"))


def test_single_row_leaves_match_lightgbm(scorer, world):
    """The single-row C API path returns the leaves `Booster.predict(pred_leaf=True)` does."""
    from serving.snapshot import load_snapshot

    X = load_snapshot(world.scores).X[:40]
    for lab, ex in scorer._explainers.items():
        assert ex._single is not None, lab
        want = ex.booster.predict(X, pred_leaf=True).astype(np.int64) + ex.offsets
        assert np.array_equal(np.vstack([ex.leaves(X[i : i + 3]) for i in range(0, len(X), 3)]), want)


def test_native_booster_predicts_what_lightgbm_does(scorer, world):
    """serving.native.NativeBooster (single-row API for a few rows, one thread beyond) equals `Booster.predict`."""
    from serving.native import NativeBooster
    from serving.snapshot import load_snapshot

    X = load_snapshot(world.scores).X[:40]
    for lab, ex in scorer._explainers.items():
        nb = NativeBooster(ex.booster)
        assert nb._single is not None, lab
        want = ex.booster.predict(X)
        got = np.concatenate([nb.predict(X[i : i + 3]) for i in range(0, len(X), 3)])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
        np.testing.assert_allclose(nb.predict(X), want, rtol=1e-12, atol=0)  # 40 rows: the booster's own path
        again = pickle.loads(pickle.dumps(nb))  # Spark ships it to its workers
        np.testing.assert_allclose(again.predict(X[:2]), want[:2], rtol=1e-12, atol=0)


def test_score_pool_is_atomic(world, tmp_path, monkeypatch):
    """A crash while writing leaves neither the output nor a temp file behind."""
    import serving.snapshot as snapshot
    from serving.batch import score_pool

    def boom(table, where, **kw):
        open(where, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(snapshot.pq, "write_table", boom)
    out = tmp_path / "s.parquet"
    with pytest.raises(OSError):
        score_pool(world.events, world.asof, out, world.cfg, record=False, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_snapshot_errors(tmp_path, world):
    from serving.snapshot import latest_snapshot, load_snapshot

    with pytest.raises(SiyuError, match="not found"):
        load_snapshot(tmp_path / "none.parquet")
    pq.write_table(pq.read_table(world.events).slice(0, 5), tmp_path / "plain.parquet")
    with pytest.raises(SiyuError, match="not a siyu scores snapshot"):
        load_snapshot(tmp_path / "plain.parquet")
    with pytest.raises(SiyuError, match="siyu score"):
        latest_snapshot(world.cfg.model_copy(update={"source": tmp_path / "x.yaml"}))


def test_parts_assemble_to_the_one_piece_snapshot(world, tmp_path):
    """The Spark engine's parts (a range of users each, scored alone) assembled with the pool's percentiles
    are the snapshot score_frame gives the whole pool: every column, the metadata, the row order."""
    from events.loader import connect
    from events.validate import load_valid_events
    from features.catalog import feature_names
    from features.with_tiers import features_and_tiers
    from serving.advice import load_push_effect
    from serving.ltv_scores import load_ltv_scorer
    from serving.pool import load_champions, populations_from_tiers, score_frame
    from serving.scoring import Scorer
    from serving.spark_scoring import _SCORES, assemble

    cfg = world.cfg
    con = connect(cfg=cfg)
    load_valid_events(con, world.events, cfg)
    feats, tiers = features_and_tiers(con, world.asof, cfg)
    scorer = Scorer(load_champions(cfg), feature_names(cfg), cfg.scoring.reasons)
    args = dict(
        scorer=scorer,
        cfg=cfg,
        asof=world.asof,
        families=["x"],
        ltv=load_ltv_scorer(cfg, scorer.feature_names),
        push_effect=load_push_effect(cfg),
    )
    pop = populations_from_tiers(tiers)
    whole = score_frame(feats, pop, **args)
    parts, scores, n = tmp_path / "parts", [], len(feats)
    parts.mkdir()
    cuts = [0, n // 5, n // 2, n]
    for i, (lo, hi) in enumerate(zip(cuts, cuts[1:])):
        t = score_frame(feats.iloc[lo:hi].reset_index(drop=True), pop, **args)
        pq.write_table(t, parts / f"part-{i:05d}.parquet")
        scores.append(pd.DataFrame({c: t.column(c).to_numpy(zero_copy_only=False).astype(float) for c in _SCORES}))
    first = pq.read_table(parts / "part-00000.parquet").column("pct_churn").to_numpy(zero_copy_only=False)
    assert not np.allclose(first, whole.column("pct_churn").to_numpy(zero_copy_only=False)[: cuts[1]], equal_nan=True)
    out = tmp_path / "scores.parquet"
    assemble(parts, pd.concat(scores[::-1]), cfg, out)  # the scores may come in any order
    got = pq.read_table(out)
    assert got.schema.metadata == whole.schema.metadata
    pd.testing.assert_frame_equal(got.to_pandas(), whole.to_pandas())


@pytest.mark.spark
@pytest.mark.slow
def test_spark_engine_matches_duckdb(world, snap, tmp_path, monkeypatch):
    """--engine spark writes the DuckDB engine's snapshot (scores, percentiles, reasons, features, order)
    without the feature rows ever coming to the driver (a Spark session: minutes, slow)."""
    from features.spark import SparkRunner
    from serving.batch import score_pool

    def collected(self, sql):  # the runner's way to the driver: only small tables may take it
        raise AssertionError("feature rows collected to the driver")

    monkeypatch.setattr(SparkRunner, "arrays", collected)
    cfg = world.cfg.model_copy(update={"runtime": world.cfg.runtime.model_copy(update={"spark_partitions": 3})})
    out = tmp_path / "spark.parquet"
    s = score_pool(world.events, world.asof, out, cfg, engine="spark", record=False, show_progress=False)
    assert s.users == len(snap)
    sp = pd.read_parquet(out)
    assert (sp.user_id.to_numpy() == snap.user_id.to_numpy()).all()  # the parts in order: the user order
    for c in snap.columns:
        if c.startswith(("p_", "pct_", "push_", "ltv", "x.")):
            np.testing.assert_allclose(sp[c].to_numpy(float), snap[c].to_numpy(float), atol=1e-9, err_msg=c)
        elif c.startswith("reasons_"):
            feats = lambda col: [None if r is None else [x["feature"] for x in r] for r in col]  # noqa: E731
            assert feats(sp[c]) == feats(snap[c]), c
        else:
            assert sp[c].equals(snap[c]), c


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 9),
    st.integers(0, 2**32 - 1),
)
def test_top_reasons_equal_a_stable_sort_of_each_row(n, width, seed):
    """Any batch size gives each row the order of a stable sort by |contribution| (ties, zeros and NaN included)."""
    rng = np.random.default_rng(seed)
    contrib = rng.choice([0.0, 0.5, -0.5, 1.0, -2.0, np.nan], size=(n, width + 1)) * rng.integers(1, 3, size=(n, 1))
    idx, c = top_reasons(contrib)
    a = np.abs(contrib[:, :-1])
    want = np.argsort(np.where(np.isnan(a), np.inf, -a), axis=1, kind="stable")[:, : min(3, width)]
    assert idx.tolist() == want.tolist()
    np.testing.assert_array_equal(c, np.take_along_axis(contrib[:, :-1], want, axis=1))
