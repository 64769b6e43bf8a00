"""Fuzz: Hypothesis-generated broken event logs through validate -> features -> batch score.

Only SiyuError (a one-line, user-fixable error) may come out; anything else is a crash.
Rows are conserved: read = accepted + quarantined + duplicates, the read count is the file's
row count, and every user with an accepted event at or before asof gets exactly one feature row
and one snapshot row.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability.results import env_float, record
from siyu.contract import CANONICAL_COLUMNS, EVENTS
from siyu.errors import SiyuError

ASOF = datetime(2025, 3, 1)
_GARBAGE = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
_BAD = st.one_of(st.none(), st.just(""), _GARBAGE)
_TS_OK = st.one_of(
    st.datetimes(datetime(2024, 11, 1), datetime(2025, 4, 30)).map(lambda d: d.isoformat()),
    st.datetimes(datetime(2024, 11, 1), datetime(2025, 4, 30)).map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S+08:00")),
    st.integers(1_730_000_000, 1_746_000_000).map(str),  # epoch seconds
    st.integers(1_730_000_000_000, 1_746_000_000_000).map(str),  # epoch ms
)
_TS_BAD = st.one_of(
    _BAD,
    st.sampled_from(["2025-02-30T00:00:00", "9999-99-99", "0", "-1", "1e20", "NaN", "inf", "2025-13-01", "5.4e16"]),
)
_NUM_BAD = st.one_of(
    _BAD,
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e309", "-0.0", "-5", "1,5", "¥12", "0x10"]),
)
VALID = {
    "user_id": st.sampled_from(["u1", "u2", "u3", "007", "用户"]),
    "ts": _TS_OK,
    "event": st.sampled_from(list(EVENTS) + ["subscribe", "order_paid", "Purchase", " follow"]),
    "amount": st.floats(0, 1e6).map(repr),
    "channel": st.sampled_from(["wecom", "group", "store"]),
    "ref_user_id": st.sampled_from(["u2", "u9"]),
    "rating": st.integers(1, 5).map(str),
    "coupon": st.sampled_from(["true", "false", "TRUE", "0"]),
    "content_id": st.sampled_from(["c1", "c2"]),
    "order_id": st.sampled_from(["o1", "o2", "o3"]),
}
BROKEN = {
    "ts": _TS_BAD,
    "amount": _NUM_BAD,
    "rating": st.one_of(_BAD, st.integers(-2, 8).map(str), st.sampled_from(["4.0", "4.5", "five"])),
}


@st.composite
def ROW(draw):
    """A contract row with 0-3 fields broken (missing, empty, garbage or out of range)."""
    row = {
        c: draw(st.one_of(st.none(), VALID[c])) if c not in ("user_id", "ts", "event") else draw(VALID[c])
        for c in CANONICAL_COLUMNS
    }
    for c in draw(st.lists(st.sampled_from(list(CANONICAL_COLUMNS)), max_size=3, unique=True)):
        row[c] = draw(BROKEN.get(c, _BAD))
    return row


LOG = st.tuples(
    st.lists(ROW(), min_size=1, max_size=40),
    st.sets(st.sampled_from([c for c in CANONICAL_COLUMNS if c not in ("user_id", "ts", "event")])),
    st.sampled_from(["csv", "parquet"]),
)


def _write(rows: list[dict], drop: set[str], kind: str, folder: Path) -> Path:
    df = pd.DataFrame(rows, columns=list(CANONICAL_COLUMNS)).drop(columns=sorted(drop))
    path = folder / f"events.{kind}"
    if kind == "csv":
        df.to_csv(path, index=False)
    else:
        df.astype("string").to_parquet(path, index=False)
    return path


def _pipeline(path: Path, n_rows: int, cfg, folder: Path) -> dict:
    """Run validate, features and scoring on one log; check conservation; return what happened."""
    from events.loader import connect
    from events.validate import load_valid_events, validate_file
    from features.compute import feature_table
    from serving.batch import score_pool

    rep = validate_file(path, cfg, folder / "validated")
    assert rep.rows_read == n_rows, f"read {rep.rows_read} of {n_rows} rows"
    assert rep.accepted + rep.quarantined + rep.duplicates == rep.rows_read
    assert sum(rep.by_reason.values()) == rep.quarantined
    con = connect(threads=1)
    load_valid_events(con, path, cfg)
    users = con.execute("SELECT count(DISTINCT user_id) FROM events WHERE ts <= ?", [ASOF]).fetchone()[0]
    if users == 0:
        return {"stage": "no users at asof"}
    feats = feature_table(con, ASOF, cfg)
    assert len(feats) == users and feats.user_id.is_unique, f"{len(feats)} feature rows for {users} users"
    out = folder / "scores.parquet"
    summary = score_pool(path, ASOF, out, cfg, record=False, show_progress=False)
    snap = pq.read_table(out, columns=["user_id"]).column("user_id").to_pylist()
    assert summary.users == len(snap) == users and len(set(snap)) == users
    return {"stage": "scored"}


def _fuzz(world, examples: int, name: str, derandomize: bool = False) -> None:
    q = world.cfg.quarantine.model_copy(update={"max_fraction": 1.0})  # junk must reach features and scoring
    cfg = world.cfg.model_copy(update={"quarantine": q})
    outcomes: dict[str, int] = {}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(log=LOG)
    def run(log):
        rows, drop, kind = log
        with tempfile.TemporaryDirectory() as d:
            path = _write(rows, drop, kind, Path(d))
            try:
                got = _pipeline(path, len(rows), cfg, Path(d))["stage"]
            except AssertionError as e:  # show the file: Hypothesis cannot print this example's repr
                raise AssertionError(f"{e}\n{kind} file: {path.read_bytes()[:1500]!r}") from e
            except SiyuError as e:
                got = f"SiyuError: {str(e)[:60]}"
                msg = str(e).strip()  # a user's error is one clear line, never a stack dump
                assert msg and "\n" not in msg and "Traceback" not in msg, f"not one line: {msg!r}"
            outcomes[got] = outcomes.get(got, 0) + 1

    try:
        run()
        ok = True
    finally:
        record(name, locals().get("ok", False), examples=examples, outcomes=outcomes)


def test_broken_logs_short(world):
    """~20 generated broken logs (CSV and Parquet): no crash, rows conserved, one score per user.

    The same 20 every run (CI must be reproducible); the long run draws new ones each time.
    """
    _fuzz(world, 20, "fuzz_events_short", derandomize=True)


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.timeout(1800)
def test_broken_logs_long(world):
    """~150 generated broken logs: no crash, rows conserved, one score per user."""
    _fuzz(world, int(env_float("SIYU_REL_EVENT_EXAMPLES", 150)), "fuzz_events")


@pytest.mark.parametrize("ts", ["1e20", "-1e300", "5.442532476532534e+16", "inf", "nan"])
def test_out_of_range_epoch_is_quarantined_not_fatal(tmp_path, ts):
    """Found by fuzzing: one epoch value beyond the TIMESTAMP range failed the whole log; it is one bad row."""
    from events.validate import validate_file
    from siyu.config import load_config

    path = tmp_path / "events.csv"
    path.write_text(f"user_id,ts,event\nu1,2025-01-02T00:00:00,follow\nu2,{ts},follow\n")
    rep = validate_file(path, load_config(), tmp_path / "out")
    assert (rep.accepted, rep.quarantined) == (1, 1)
    assert rep.by_reason == {"unparseable ts": 1}
