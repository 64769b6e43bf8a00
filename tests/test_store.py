"""The event store (`siyu ingest`, `--store`): batches, duplicates, late events, parity with the whole log."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest
from serving_world import serving_world

from siyu.contract import LABELS
from siyu.errors import SiyuError


@pytest.fixture(scope="module")
def world():
    return serving_world()


def _copy(con, src, where: str, out) -> None:
    con.execute(f"COPY (SELECT * FROM read_parquet('{src}') WHERE {where}) TO '{out}' (FORMAT parquet)")


@pytest.fixture(scope="module")
def batches(world, tmp_path_factory):
    """The world's log cut into batches: a backfill missing some January rows, three nights, the late rows."""
    d = tmp_path_factory.mktemp("batches")
    con = duckdb.connect()
    last = world.asof - timedelta(days=1)  # the last day with events
    days = [last - timedelta(days=k) for k in (2, 1, 0)]
    late = "ts >= '2025-01-20' AND ts < '2025-01-21' AND hash(user_id) % 2 = 0"
    _copy(con, world.events, f"ts < '{days[0]:%Y-%m-%d}' AND NOT ({late})", d / "backfill.parquet")
    for i, day in enumerate(days):  # each night's export repeats half of the day before: duplicates
        lo = day - timedelta(hours=12) if i else day
        _copy(
            con,
            world.events,
            f"ts >= '{lo:%Y-%m-%d %H:%M}' AND ts < '{day + timedelta(days=1):%Y-%m-%d}'",
            d / f"night{i}.parquet",
        )
    _copy(con, world.events, late, d / "late.parquet")
    return d


@pytest.fixture(scope="module")
def store(world, batches, tmp_path_factory):
    from features.ingest import ingest_file

    root = tmp_path_factory.mktemp("store") / "store"
    done = {}
    for name in ("backfill", "night0", "night1", "night2", "late"):
        done[name] = ingest_file(batches / f"{name}.parquet", root, world.cfg)
    return root, done


def test_store_scores_equal_the_whole_log(world, store, tmp_path):
    """siyu score --store gives the scores, tiers and reasons of siyu score over the whole log."""
    from serving.batch import score_pool

    root, _ = store
    out = tmp_path / "scores.parquet"
    score_pool(root, world.asof, out, world.cfg, record=False, show_progress=False)
    full = pd.read_parquet(world.scores).set_index("user_id")
    got = pd.read_parquet(out).set_index("user_id")
    assert list(got.index) == list(full.index)
    assert (got.tier == full.tier).all()
    for lab in LABELS:
        a, b = got[f"p_{lab}"].to_numpy(float), full[f"p_{lab}"].to_numpy(float)
        assert (np.isnan(a) == np.isnan(b)).all()
        assert np.nanmax(np.abs(a - b)) <= 1e-9
        for x, y in zip(got[f"reasons_{lab}"], full[f"reasons_{lab}"]):
            if y is None:
                assert x is None
                continue
            assert [r["feature"] for r in x] == [r["feature"] for r in y]
            np.testing.assert_allclose([r["contribution"] for r in x], [r["contribution"] for r in y], atol=1e-9)
    import pyarrow.parquet as pq

    from serving.snapshot import META_KEY

    meta = [json.loads(pq.read_schema(p).metadata[META_KEY]) for p in (world.scores, out)]
    assert meta[1]["lineage"]["events_fingerprint"] == meta[0]["lineage"]["events_fingerprint"]


def test_store_lineage_and_families_equal_the_whole_log(world, store):
    from events.lineage import events_fingerprint
    from events.loader import connect
    from events.store import attached_store
    from events.validate import load_valid_events
    from features.compute import present_families

    root, _ = store
    raw, st = connect(cfg=world.cfg), connect(cfg=world.cfg)
    load_valid_events(raw, world.events, world.cfg)
    load_valid_events(st, root, world.cfg)
    assert attached_store(st) == str(root.resolve()) and attached_store(raw) is None
    assert events_fingerprint(st) == events_fingerprint(raw)  # the store's from its manifest
    assert present_families(st) == present_families(raw)
    assert st.execute("SELECT count(*) FROM events").fetchone() == raw.execute("SELECT count(*) FROM events").fetchone()


@pytest.mark.parametrize("hour", [0, 13])  # 13:00: the day facts are cut at midnight, the rows are read instead
def test_store_features_tiers_labels_equal_the_whole_log(world, store, hour):
    from events.loader import connect
    from events.validate import load_valid_events
    from features.compute import feature_table
    from features.labels import label_table
    from features.tiers import tier_table

    root, _ = store
    raw, st = connect(cfg=world.cfg), connect(cfg=world.cfg)
    load_valid_events(raw, world.events, world.cfg)
    load_valid_events(st, root, world.cfg)
    at = world.asof - timedelta(days=1) + timedelta(hours=hour)
    pd.testing.assert_frame_equal(feature_table(st, at, world.cfg), feature_table(raw, at, world.cfg), atol=1e-9)
    pd.testing.assert_frame_equal(tier_table(st, at, world.cfg), tier_table(raw, at, world.cfg))
    cut = world.asof - timedelta(days=world.cfg.windows.horizon_days + 1)
    pd.testing.assert_frame_equal(label_table(st, cut, world.cfg), label_table(raw, cut, world.cfg))


def test_store_training_table_equals_the_whole_log(world, store):
    """siyu train --store builds the same multi-cutoff table (features + labels) from the store's facts."""
    from events.loader import connect
    from events.validate import load_valid_events
    from features.windows import resolve
    from training.table import training_cutoffs, training_table

    root, _ = store
    raw, st = connect(cfg=world.cfg), connect(cfg=world.cfg)
    load_valid_events(raw, world.events, world.cfg)
    load_valid_events(st, root, world.cfg)
    cfg = resolve(world.cfg, raw)
    assert resolve(world.cfg, st) == cfg
    cutoffs = training_cutoffs(raw, cfg)
    assert training_cutoffs(st, cfg) == cutoffs and len(cutoffs) > 1
    pd.testing.assert_frame_equal(training_table(st, cutoffs, cfg), training_table(raw, cutoffs, cfg), atol=1e-9)


def test_batches_duplicates_and_late_events(store):
    root, done = store
    assert all(not s.already for s in done.values())
    assert done["night1"].duplicates_in_store > 0 and done["night2"].duplicates_in_store > 0
    late = done["late"]
    assert late.new_rows > 0 and late.late_dates == ["2025-01-20"]
    assert "2025-01" in late.months_rebuilt  # January's block, which an asof in late summer reads


def test_reingest_changes_nothing(world, store, batches):
    from features.ingest import ingest_file

    root, _ = store
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    s = ingest_file(batches / "night1.parquet", root, world.cfg)
    assert s.already and s.new_rows == 0
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before


def test_failed_ingest_leaves_the_store_as_it_was(world, store, tmp_path, monkeypatch):
    import shutil

    import events.store as es
    import features.ingest as ing

    root = tmp_path / "copy"
    shutil.copytree(store[0], root)
    manifest = (root / es.MANIFEST).read_text()
    files = sorted(p for p in root.rglob("*.parquet"))
    extra = tmp_path / "extra.parquet"
    con = duckdb.connect()
    _copy(con, world.events, "ts >= '2025-02-03' AND ts < '2025-02-04'", extra)
    shifted = tmp_path / "shifted.parquet"  # rows one second later: new to the store
    con.execute(
        f"COPY (SELECT * REPLACE (ts + INTERVAL 1 SECOND AS ts) FROM '{extra}') TO '{shifted}' (FORMAT parquet)"
    )

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ing, "write_manifest", boom)
    with pytest.raises(OSError):
        ing.ingest_file(shifted, root, world.cfg)
    assert (root / es.MANIFEST).read_text() == manifest  # readers see the store as before
    assert not (root / ".lock").exists() and not list(root.glob(".staging-*"))
    left = {p for p in root.rglob("*.parquet") if "quarantine" not in str(p)} - set(files)
    assert left  # the failure came after the new files were moved in: unlisted, so invisible
    assert not {str(p.relative_to(root)) for p in left} & es.live_files(es.read_manifest(root))
    monkeypatch.undo()
    s = ing.ingest_file(shifted, root, world.cfg)  # the retry deletes what the failure left
    assert s.new_rows > 0 and not s.already
    live = es.live_files(es.read_manifest(root))  # (the retry rewrites the batch's own event file names)
    assert all(str(p.relative_to(root)) in live for p in left if p.exists())
    assert not all(p.exists() for p in left)  # the failed attempt's fact files are gone


def test_batch_over_the_threshold_is_refused_whole(world, store, tmp_path):
    from events.store import MANIFEST
    from features.ingest import ingest_file

    root = store[0]
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,ts,event\n" + "u1,2025-03-01 10:00:00,purchase\n" * 3 + "u2,2025-03-01 10:00:00,visit\n")
    manifest = (root / MANIFEST).read_text()
    with pytest.raises(SiyuError, match="broke the event contract"):
        ingest_file(bad, root, world.cfg)
    assert (root / MANIFEST).read_text() == manifest
    assert list((root / "quarantine").glob("batch=*/quarantine.parquet"))


def test_history_from_the_store_equals_the_copied_history(world, store, tmp_path):
    """/predict_events reads a --store snapshot's history from the store's files."""
    from events.loader import connect
    from events.validate import load_valid_events
    from serving.history import History, StoreHistory, write_history

    root, _ = store
    con = connect(cfg=world.cfg)
    load_valid_events(con, root, world.cfg)
    write_history(con, world.asof, tmp_path / "scores.parquet")
    h, copied = History(tmp_path / "scores.parquet"), History(world.scores)
    assert isinstance(h, StoreHistory)
    users = list(pd.read_parquet(world.scores).user_id[:25]) + ["nobody"]
    a, b = h.rows(users).to_pandas(), copied.rows(users).to_pandas()
    key = ["user_id", "ts", "event", "content_id", "order_id"]
    pd.testing.assert_frame_equal(a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True))
    assert len(h) == len(copied)


def test_store_refuses_another_time_zone(world, store):
    from events.loader import connect
    from events.validate import load_valid_events

    other = world.cfg.model_copy(update={"events": world.cfg.events.model_copy(update={"time_zone": "Asia/Tokyo"})})
    with pytest.raises(SiyuError, match="time_zone"):
        load_valid_events(connect(cfg=other), store[0], other)


@pytest.mark.spark
@pytest.mark.slow
def test_spark_reads_the_store(world, store):
    """Spark builds the same facts from the store's files: the same features (a Spark session: slow)."""
    from events.loader import connect
    from events.validate import load_valid_events
    from features import spark as S
    from features.compute import feature_table

    root, _ = store
    con = connect(cfg=world.cfg)
    load_valid_events(con, root, world.cfg)
    sp = S.session(partitions=2)
    try:
        S.load_store(sp, root)
        got = S.feature_table(sp, world.asof, world.cfg)
    finally:
        sp.stop()
    pd.testing.assert_frame_equal(got, feature_table(con, world.asof, world.cfg), atol=1e-9, check_dtype=False)


@pytest.mark.spark
@pytest.mark.slow
def test_spark_scores_the_store(world, store, tmp_path):
    """`siyu score --store --engine spark` writes the DuckDB engine's snapshot of the store (a Spark session: slow)."""
    from serving.batch import score_pool

    root, _ = store
    cfg = world.cfg.model_copy(update={"runtime": world.cfg.runtime.model_copy(update={"spark_partitions": 2})})
    duck, spark = tmp_path / "duckdb.parquet", tmp_path / "spark.parquet"
    score_pool(root, world.asof, duck, cfg, record=False, show_progress=False)
    score_pool(root, world.asof, spark, cfg, engine="spark", record=False, show_progress=False)
    a, b = pd.read_parquet(duck), pd.read_parquet(spark)
    assert (a.user_id.to_numpy() == b.user_id.to_numpy()).all() and (a.tier.to_numpy() == b.tier.to_numpy()).all()
    for lab in LABELS:
        for c in (f"p_{lab}", f"pct_{lab}"):
            np.testing.assert_allclose(b[c].to_numpy(float), a[c].to_numpy(float), atol=1e-9, err_msg=c)
        names = lambda col: [None if r is None else [x["feature"] for x in r] for r in col]  # noqa: E731
        assert names(b[f"reasons_{lab}"]) == names(a[f"reasons_{lab}"])


def test_cli_ingest_twice_then_features_from_the_store(tmp_path):
    """`siyu ingest` then `siyu features --store` (in-process): the second ingest is a no-op."""
    from conftest import DATA
    from typer.testing import CliRunner

    from app.cli import app, events_or_store
    from events.loader import connect
    from events.validate import load_valid_events
    from features.compute import feature_table
    from siyu.config import load_config

    store, cli = tmp_path / "store", CliRunner()
    first = cli.invoke(app, ["ingest", str(DATA / "messy_events.csv"), "--store", str(store)])
    assert first.exit_code == 0, first.output
    assert "ingested" in first.output and "quarantined" in first.output
    again = cli.invoke(app, ["ingest", str(DATA / "messy_events.csv"), "--store", str(store)])
    assert again.exit_code == 0 and "already ingested" in again.output
    with pytest.raises(SiyuError, match="either EVENTS or --store"):
        events_or_store(DATA / "messy_events.csv", store)
    out = tmp_path / "f.parquet"
    feats = cli.invoke(app, ["features", "--store", str(store), "--asof", "2026-03-01", "--out", str(out)])
    assert feats.exit_code == 0, feats.output
    cfg = load_config()
    con = connect(cfg=cfg)
    load_valid_events(con, DATA / "messy_events.csv", cfg)
    want = feature_table(con, datetime(2026, 3, 1), cfg)
    pd.testing.assert_frame_equal(pd.read_parquet(out), want, atol=1e-9, check_dtype=False)


def test_a_holdout_may_end_in_a_later_batch(tmp_path):
    """The day a holdout ends is not the day it began: the store's markers are the batch's context."""
    from features.ingest import ingest_file
    from siyu.config import load_config

    cfg, store = load_config(), tmp_path / "store"
    cfg = cfg.model_copy(update={"quarantine": cfg.quarantine.model_copy(update={"max_fraction": 0.5})})  # 3 rows
    day1, day2 = tmp_path / "d1.csv", tmp_path / "d2.csv"
    day1.write_text(
        "user_id,ts,event,channel\nu1,2025-03-01 09:00:00,follow,official_account\n"
        "u1,2025-03-01 10:00:00,holdout_start,\nu2,2025-03-01 09:00:00,follow,official_account\n"
    )
    day2.write_text(
        "user_id,ts,event,channel\nu1,2025-03-02 10:00:00,holdout_end,\nu2,2025-03-02 10:00:00,holdout_end,\n"
        "u1,2025-03-02 11:00:00,visit,\n"
    )
    ingest_file(day1, store, cfg)
    s = ingest_file(day2, store, cfg)
    assert (s.accepted, s.quarantined) == (2, 1)  # u1's end continues its start; u2 never began one
    q = pd.read_parquet(max((store / "quarantine").rglob("quarantine.parquet"), key=lambda p: p.stat().st_mtime))
    assert q.user_id.tolist() == ["u2"] and q.reason.str.contains("holdout_end without holdout_start").all()
    facts = json.loads((store / "siyu-store.json").read_text())["facts"]["markers"]
    assert len(facts) == 2  # each batch's markers are the store's marker facts


def _empty_rows(store, date: str) -> None:
    """Empty a date's stored event files: what validation then knows of that day is the marker facts."""
    import pyarrow.parquet as pq

    for f in json.loads((store / "siyu-store.json").read_text())["events"][date]:
        pq.write_table(pq.read_table(store / f).slice(0, 0), store / f)


def test_marker_facts_are_the_context_not_the_rows(tmp_path):
    """A later batch's holdout_end is checked against the marker facts, not the stored event files; a store
    from before the marker facts has its markers read from its rows once and written as facts."""
    from features.ingest import ingest_file
    from siyu.config import load_config

    cfg = load_config()
    cfg = cfg.model_copy(update={"quarantine": cfg.quarantine.model_copy(update={"max_fraction": 0.5})})
    days = [tmp_path / f"d{i}.csv" for i in range(3)]
    days[0].write_text(
        "user_id,ts,event,channel\nu1,2025-03-01 09:00:00,follow,official_account\n"
        "u1,2025-03-01 10:00:00,holdout_start,\nu2,2025-03-01 09:00:00,follow,official_account\n"
        "u2,2025-03-01 10:00:00,holdout_start,\n"
    )
    days[1].write_text("user_id,ts,event,channel\nu1,2025-03-02 10:00:00,holdout_end,\nu1,2025-03-02 11:00:00,visit,\n")
    days[2].write_text("user_id,ts,event,channel\nu2,2025-03-03 10:00:00,holdout_end,\nu2,2025-03-03 11:00:00,visit,\n")

    store = tmp_path / "store"
    ingest_file(days[0], store, cfg)
    _empty_rows(store, "2025-03-01")
    assert ingest_file(days[1], store, cfg).quarantined == 0

    old = tmp_path / "old"
    ingest_file(days[0], old, cfg)
    m = json.loads((old / "siyu-store.json").read_text())
    for fs in m["facts"].pop("markers").values():
        for f in fs:
            (old / f).unlink()
    (old / "siyu-store.json").write_text(json.dumps(m))
    assert ingest_file(days[1], old, cfg).quarantined == 0  # u1's start read from the rows
    facts = json.loads((old / "siyu-store.json").read_text())["facts"]["markers"]
    got = pd.concat(pd.read_parquet(old / f) for fs in facts.values() for f in fs)
    assert sorted(zip(got.user_id, got.event)) == [
        ("u1", "holdout_end"),
        ("u1", "holdout_start"),
        ("u2", "holdout_start"),
    ]
    _empty_rows(old, "2025-03-01")
    assert ingest_file(days[2], old, cfg).quarantined == 0  # u2's start is in the facts written from the rows
