"""Data-contract tests: every rule of docs/design.md §2, counts that add up, outputs that are whole."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from make_samples import BAD_ROWS, COLS

from events.loader import connect
from events.report import write_outputs
from events.validate import load_valid_events, run_validation, validate_file, validate_frame
from siyu.errors import SiyuError

EXPECTED_REASONS = [
    "missing user_id",
    "missing ts",
    "unparseable ts",
    "missing event",
    "unknown event",
    "amount is not a number",
    "missing amount",
    "negative amount",
    "rating is not an integer",
    "missing rating",
    "rating outside 1-5",
    "coupon is not a boolean",
    "referral_purchase without ref_user_id",
]


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c) for c in COLS} for r in rows], columns=COLS, dtype=object)


@pytest.mark.parametrize("row,reason", list(zip(BAD_ROWS, EXPECTED_REASONS)), ids=EXPECTED_REASONS)
def test_each_rule_quarantines_with_its_reason(cfg, row, reason):
    good = {"user_id": "u1", "ts": "2026-01-01T00:00:00Z", "event": "visit"}
    accepted, quarantine = validate_frame(frame([good, row]), cfg)
    assert len(accepted) == 1 and accepted.user_id.tolist() == ["u1"]
    assert quarantine.reason.tolist() == [reason]
    assert quarantine.source_row.tolist() == [2]
    # original values are kept as they came
    assert quarantine.event.iloc[0] == row.get("event")


def test_timestamps_all_formats_become_the_same_utc_instant(cfg):
    rows = [
        {"user_id": f"u{i}", "ts": ts, "event": "visit"}
        for i, ts in enumerate(
            [
                "2026-01-01T08:00:00Z",
                "2026-01-01 08:00:00",
                "2026-01-01T16:00:00+08:00",
                "1767254400",
                "1767254400000",
                "2026-01-01T03:00:00-05:00",
            ]
        )
    ]
    accepted, quarantine = validate_frame(frame(rows), cfg)
    assert quarantine.empty
    assert set(accepted.ts.astype(str)) == {"2026-01-01 08:00:00"}


def test_ids_stay_strings_with_leading_zeros(cfg, tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("user_id,ts,event,ref_user_id,amount\n007,2026-01-01,referral_purchase,0042,10\n")
    con = connect()
    load_valid_events(con, p, cfg)
    assert con.execute("SELECT user_id, ref_user_id FROM events").fetchall() == [("007", "0042")]


def test_brand_event_names_are_mapped(cfg):
    rows = [
        {"user_id": "u", "ts": "2026-01-01", "event": "order_paid", "amount": "5", "order_id": "o1"},
        {"user_id": "u", "ts": "2026-01-02", "event": "subscribe"},
    ]
    accepted, q = validate_frame(frame(rows), cfg)
    assert sorted(accepted.event) == ["follow", "purchase"] and q.empty


def test_exact_duplicates_count_once_but_near_duplicates_stay(cfg):
    a = {"user_id": "u", "ts": "2026-01-01", "event": "purchase", "amount": "5", "order_id": "o1"}
    same_instant_other_format = dict(a, ts="1767225600")
    other_amount = dict(a, amount="6")
    con = connect()
    r = run_validation(con, frame([a, a, same_instant_other_format, other_amount]), cfg)
    assert (r.rows_read, r.accepted, r.duplicates, r.quarantined) == (4, 2, 2, 0)
    from rich.console import Console

    from events.report import print_report

    console = Console(record=True, width=400)
    print_report(r, console)
    assert "map the log's order id (events.columns.order_id) to keep both" in console.export_text()


def test_parquet_folder_of_parts(cfg, tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    df = frame([{"user_id": "u1", "ts": "2026-01-01", "event": "visit"}])
    df.to_parquet(d / "part-0.parquet")
    frame([{"user_id": "u2", "ts": "2026-01-02", "event": "like"}]).to_parquet(d / "part-1.parquet")
    r = run_validation(connect(), d, cfg)
    assert (r.rows_read, r.accepted, r.users) == (2, 2, 2)


def test_typed_parquet_timestamps_and_epochs(cfg, tmp_path):
    df = pd.DataFrame(
        {
            "user_id": ["a", "b"],
            "event": ["visit", "visit"],
            "ts": pd.to_datetime(["2026-01-01 08:00:00+08:00", "2026-01-01 00:00:00+00:00"], utc=True),
        }
    )
    df.to_parquet(tmp_path / "tz.parquet")
    con = connect()
    load_valid_events(con, tmp_path / "tz.parquet", cfg)
    assert con.execute("SELECT DISTINCT CAST(ts AS VARCHAR) FROM events").fetchall() == [("2026-01-01 00:00:00",)]
    pd.DataFrame({"user_id": ["a"], "event": ["visit"], "ts": [1767225600000]}).to_parquet(tmp_path / "ms.parquet")
    load_valid_events(con, tmp_path / "ms.parquet", cfg)
    assert con.execute("SELECT CAST(ts AS VARCHAR) FROM events").fetchall() == [("2026-01-01 00:00:00",)]


def test_unparseable_times_get_the_ts_formats_that_would_read_them(cfg, tmp_path):
    """A month-first export is refused (never guessed), and the error names the declaration that reads it;
    where day-first and month-first both fit, it says the brand must choose."""
    p = tmp_path / "retail.csv"
    p.write_text("user_id,ts,event\n" + "".join(f"u{i},12/{i + 1}/2010 8:26,visit\n" for i in range(20)))
    with pytest.raises(SiyuError, match=r"times like '12/1/2010 8:26' read as events.ts_formats: \['%m/%d/%Y %H:%M'\]"):
        load_valid_events(connect(), p, cfg)
    p.write_text("user_id,ts,event\n" + "".join(f"u{i},0{i % 9 + 1}/04/2025,visit\n" for i in range(20)))
    r = run_validation(connect(), p, cfg)
    assert r.by_reason == {"unparseable ts": 20} and "'%d/%m/%Y' and '%m/%d/%Y': say which one" in r.ts_hint
    ok = run_validation(connect(), p, cfg.model_copy(update={"events": cfg.events.model_copy(
        update={"ts_formats": ["%d/%m/%Y"]})}))  # fmt: skip
    assert (ok.accepted, ok.quarantined, ok.ts_hint) == (20, 0, None)


def test_money_text_is_read_as_its_amount(cfg):
    """Exports write money with a sign and thousands commas: read as the number; a comma decimal is ambiguous."""
    written = {"¥1,234.50": 1234.5, "$12": 12.0, "88元": 88.0, "RMB 99.9": 99.9, "1,234": 1234.0, " 7 ": 7.0}
    bad = {"1.234,50": "amount is not a number", "12,34": "amount is not a number", "¥": "amount is not a number",
           "-¥5": "negative amount", "¥-5": "negative amount"}  # fmt: skip
    rows = [{"user_id": f"u{i:02d}", "ts": "2026-01-01", "event": "purchase", "amount": a, "order_id": f"o{i}"}
            for i, a in enumerate([*written, *bad])]  # fmt: skip
    accepted, quarantine = validate_frame(frame(rows), cfg)
    assert accepted.sort_values("user_id").amount.tolist() == list(written.values())
    assert dict(zip(quarantine.amount, quarantine.reason)) == bad  # quarantine keeps the text as written


def test_compact_dates_are_dates_not_epoch_seconds(cfg, tmp_path):
    """20260101 is 1 January 2026 (as epoch seconds it would be August 1970), as text, CSV or typed integer;
    20260101083000 is a date-time; a compact date that is no calendar day is quarantined, never 1970."""
    rows = [{"user_id": f"u{i}", "ts": ts, "event": "visit"} for i, ts in
            enumerate(["20260101", "20260101083000", "2026-01-01", "20261345"])]  # fmt: skip
    accepted, quarantine = validate_frame(frame(rows), cfg)
    assert accepted.sort_values("user_id").ts.astype(str).tolist() == [
        "2026-01-01 00:00:00", "2026-01-01 08:30:00", "2026-01-01 00:00:00"]  # fmt: skip
    assert quarantine.reason.tolist() == ["unparseable ts"] and quarantine.ts.tolist() == ["20261345"]
    p = tmp_path / "orders.csv"  # what a shop's export looks like: the reader types the column as integers
    p.write_text("user_id,ts,event,amount\nc1,19970101,purchase,11.77\nc1,19970112,purchase,12.00\n")
    con = connect()
    load_valid_events(con, p, cfg)
    assert [str(t) for (t,) in con.execute("SELECT ts FROM events ORDER BY ts").fetchall()] == [
        "1997-01-01 00:00:00", "1997-01-12 00:00:00"]  # fmt: skip
    pd.DataFrame({"user_id": ["a", "b"], "event": ["visit"] * 2, "ts": [20260101, 1767225600]}).to_parquet(
        tmp_path / "int.parquet"
    )
    load_valid_events(con, tmp_path / "int.parquet", cfg)
    assert {str(t) for (t,) in con.execute("SELECT ts FROM events").fetchall()} == {"2026-01-01 00:00:00"}


def test_messy_sample_writes_quarantine_and_events(cfg, tmp_path):
    from conftest import DATA

    r = validate_file(DATA / "messy_events.csv", cfg, tmp_path)
    assert not r.over_threshold
    assert r.by_reason == {reason: 1 for reason in EXPECTED_REASONS}
    assert (r.rows_read, r.duplicates) == (2018, 5)
    q = pd.read_parquet(tmp_path / "quarantine.parquet")
    assert len(q) == 13 and set(q.reason) == set(EXPECTED_REASONS)
    assert len(pd.read_parquet(tmp_path / "events.parquet")) == r.accepted == 2000


def test_over_threshold_is_refused_after_writing_quarantine_only(cfg, tmp_path):
    from conftest import DATA

    (tmp_path / "events.parquet").write_text("stale output of an older run")
    with pytest.raises(SiyuError, match=r"13 of 53 rows .* over quarantine.max_fraction"):
        load_valid_events(connect(), DATA / "too_messy.csv", cfg, out_dir=tmp_path)
    assert (tmp_path / "quarantine.parquet").exists()
    assert not (tmp_path / "events.parquet").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".validate-")]


def test_threshold_comes_from_config(cfg, tmp_path):
    from conftest import DATA

    loose = cfg.model_copy(update={"quarantine": cfg.quarantine.model_copy(update={"max_fraction": 0.5})})
    r = load_valid_events(connect(), DATA / "too_messy.csv", loose)
    assert r.quarantined == 13


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("e.csv", "user_id,event\nu,visit\n", r"lacks required column\(s\) \['ts'\]"),
        ("e.csv", "", r"lacks required column"),
        ("e.parquet", "this is not parquet", r"cannot read event log"),
    ],
)
def test_unusable_files_are_one_clear_error(cfg, tmp_path, name, content, match):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(SiyuError, match=match):
        run_validation(connect(), p, cfg)


def test_missing_file_and_bad_suffix(cfg, tmp_path):
    with pytest.raises(SiyuError, match="not found"):
        run_validation(connect(), tmp_path / "nope.csv", cfg)
    (tmp_path / "e.xlsx").write_text("x")
    with pytest.raises(SiyuError, match="unsupported event file type"):
        run_validation(connect(), tmp_path / "e.xlsx", cfg)


# --- property: rows are conserved on any messy log -------------------------------------------------
cell = st.one_of(st.none(), st.just(""), st.text(max_size=6))
row_strategy = st.fixed_dictionaries(
    {
        "user_id": st.one_of(st.sampled_from(["u1", "u2", "007", ""]), cell),
        "ts": st.one_of(
            st.sampled_from(
                ["2026-01-01", "2026-01-02T10:00:00+08:00", "1767225600", "1767225600000", "not a date", ""]
            ),
            cell,
        ),
        "event": st.one_of(
            st.sampled_from(
                ["visit", "purchase", "refund", "review", "referral_purchase", "order_paid", "teleport", ""]
            ),
            cell,
        ),
        "amount": st.one_of(st.sampled_from(["10", "-1", "abc", "nan", "1e3", ""]), cell),
        "rating": st.one_of(st.sampled_from(["1", "5", "0", "6", "4.5", "x"]), cell),
        "coupon": st.sampled_from([None, "true", "false", "1", "maybe"]),
        "ref_user_id": st.sampled_from([None, "", "r1"]),
        "order_id": st.sampled_from([None, "o1", "o2"]),
    }
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(row_strategy, min_size=1, max_size=30).flatmap(
        lambda rs: st.lists(st.sampled_from(rs), min_size=len(rs), max_size=len(rs) * 2)
    )
)
# Random rows are rarely valid twice over: these always run, with exact and canonical-only duplicates.
@example(rows=[{"user_id": "u", "ts": "2026-01-01", "event": "visit"}] * 3 + [{"user_id": "u", "ts": "x"}])
@example(
    rows=[
        {"user_id": "u", "ts": "2026-01-01", "event": "order_paid", "amount": "10"},
        {"user_id": "u", "ts": "1767225600", "event": "purchase", "amount": "10"},
        {"user_id": "v", "ts": "2026-01-01", "event": "visit"},
    ]
)
def test_rows_read_equals_accepted_plus_quarantined_plus_duplicates(cfg, rows, tmp_path_factory):
    """Each count measured on its own: accepted and quarantined from the output files, duplicates by a
    second run in which a unique content_id per row makes every row distinct (the report derives two
    of its counts as differences, so checking their sum alone could not fail)."""
    loose = cfg.model_copy(update={"quarantine": cfg.quarantine.model_copy(update={"max_fraction": 1.0})})
    out = tmp_path_factory.mktemp("validated")
    con = connect()
    r = run_validation(con, frame(rows), loose)
    write_outputs(con, r, out)
    accepted = pd.read_parquet(out / "events.parquet")
    quarantined = pd.read_parquet(out / "quarantine.parquet")
    tagged = frame(rows).assign(content_id=[f"row{i}" for i in range(len(rows))])
    every_valid, _ = validate_frame(tagged, loose)
    duplicates = len(every_valid) - len(every_valid.drop(columns="content_id").drop_duplicates())
    assert (r.rows_read, r.accepted, r.quarantined, r.duplicates) == (
        len(rows),
        len(accepted),
        len(quarantined),
        duplicates,
    )
    assert r.rows_read == r.accepted + r.quarantined + r.duplicates
    assert sorted(quarantined.source_row) == sorted(set(quarantined.source_row))  # each bad row once
    assert sum(r.by_reason.values()) == r.quarantined
    assert len(accepted) == len(accepted.drop_duplicates())
    # accepted rows honour the contract
    assert accepted.user_id.notna().all() and accepted.ts.notna().all()
    money = accepted[accepted.event.isin(["purchase", "refund", "referral_purchase"])]
    assert (money.amount >= 0).all()
    assert accepted.rating.dropna().between(1, 5).all()


def test_iso_offsets_do_not_depend_on_the_machine_time_zone(cfg, monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        accepted, _ = validate_frame(
            frame(
                [
                    {"user_id": "u", "ts": "2026-01-01 08:00:00", "event": "visit"},
                    {"user_id": "v", "ts": "2026-01-01T16:00:00+08:00", "event": "visit"},
                ]
            ),
            cfg,
        )
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert set(accepted.ts.astype(str)) == {"2026-01-01 08:00:00"}


@pytest.mark.parametrize(
    "text",
    [
        # Found by the event fuzz: a sniffed quote character of ' merged these two rows into one.
        "user_id,ts,event,amount\nu1,2025-01-01,follow,'\nu2,2025-01-01,follow,'\n",
        "user_id,ts,event\n'a,2025-01-01,follow\nu2,2025-01-01,b'\n",
        "user_id,ts,event\n#a,2025-01-01,follow\n#b,2025-01-01,follow\n",  # '#' is data, not a comment
        "user_id,ts,event\na;b;c,2025;01,follow\nd;e;f,2025;01,follow\n",  # ';' is data, not the delimiter
        'user_id,ts,event\r\n"a\r\nb",2025-01-01,follow\r\nu2,2025-01-01,follow\r\n',  # CRLF, a quoted line break
    ],
)
def test_csv_dialect_is_fixed_so_no_row_is_merged_or_skipped(cfg, tmp_path, text):
    p = tmp_path / "e.csv"
    p.write_bytes(text.encode())
    r = run_validation(connect(), p, cfg)
    assert r.rows_read == 2


def test_tab_separated_file(cfg, tmp_path):
    p = tmp_path / "e.tsv"
    p.write_text("user_id\tts\tevent\nu1\t2025-01-01\tfollow\nu2\t2025-01-02\tfollow, twice\n")
    r = run_validation(connect(), p, cfg)
    assert (r.rows_read, r.accepted, r.quarantined) == (2, 1, 1)


def test_malformed_csv_lines_are_quarantined_alone(cfg, tmp_path):
    # Too many fields, too few, and a quoted line break in between: each refused line is one
    # quarantined record with its position; the lines around it are read as usual.
    p = tmp_path / "e.csv"
    p.write_text(
        "user_id,ts,event,amount\n"
        "u1,2025-01-01,visit,\n"
        "u2,2025-01-01,visit,,extra\n"
        'u3,2025-01-02,"visit\nagain",\n'
        "u4\n"
        "u5,2025-01-03,visit,\n"
    )
    con = connect()
    r = run_validation(con, p, cfg)
    assert (r.rows_read, r.accepted, r.quarantined, r.duplicates) == (5, 2, 3, 0)
    assert r.by_reason == {"malformed CSV line": 2, "unknown event": 1}
    q = con.table("quarantine").df()
    assert q.source_row.tolist() == [2, 3, 4]
    assert q.reason.tolist() == ["malformed CSV line", "unknown event", "malformed CSV line"]
    assert q.detail[0].startswith("record 2: Expected Number of Columns: 4 Found: 5: u2,2025-01-01")
    assert sorted(con.table("events").df().user_id) == ["u1", "u5"]
    # A second read on the same connection counts only its own refused lines.
    assert run_validation(con, p, cfg).rows_read == 5


def test_carriage_return_inside_an_unquoted_value_refuses_the_file(cfg, tmp_path):
    # DuckDB ends a record at a bare CR, so "u1 ... a" would be accepted with its order_id cut short.
    p = tmp_path / "e.csv"
    p.write_bytes(b"user_id,ts,event,order_id\nu1,2025-01-01,visit,a\rb\nu2,2025-01-01,visit,x\n")
    with pytest.raises(SiyuError, match=r"carriage return .* inside an unquoted value"):
        run_validation(connect(), p, cfg)


def test_validation_without_the_report_leaves_the_same_tables(cfg):
    """report=False (the API's) skips only the counts: accepted and quarantined rows are those of a full run."""
    good = {"user_id": "u1", "ts": "2026-01-01T00:00:00Z", "event": "visit"}
    rows = frame([good, good, *BAD_ROWS])
    full, lean = connect(cfg=cfg), connect(cfg=cfg)
    assert run_validation(full, rows, cfg, adapt_columns=False).quarantined == len(BAD_ROWS)
    assert run_validation(lean, rows, cfg, adapt_columns=False, report=False) is None
    for t in ("events", "quarantine"):
        pd.testing.assert_frame_equal(full.table(t).df(), lean.table(t).df())
    # The same rows as an Arrow table of text (how the API passes them) validate the same.
    import pyarrow as pa

    arrow = connect(cfg=cfg)
    run_validation(
        arrow, pa.Table.from_pandas(rows.astype("string"), preserve_index=False), cfg, adapt_columns=False, report=False
    )
    for t in ("events", "quarantine"):
        pd.testing.assert_frame_equal(full.table(t).df(), arrow.table(t).df())


def test_a_cursor_is_a_session_set_up_like_connect(cfg):
    """loader.cursor: the session time zone is UTC again (it is per session) and temp tables stay its own."""
    from events.loader import cursor

    con = connect(cfg=cfg)
    con.execute("SET GLOBAL TimeZone = 'Asia/Tokyo'")  # a new session's default: what it would read text in
    cur = cursor(con)
    assert cur.execute("SELECT current_setting('TimeZone')").fetchone()[0] in ("UTC", "Etc/UTC")
    cur.execute("CREATE TEMP TABLE mine AS SELECT 1 AS a")
    assert not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'mine'").fetchone()[0]


def test_typed_parquet_validates_as_its_text(cfg, tmp_path):
    """Typed amount / rating / coupon columns (parsed from their type) and a single file's own row
    numbers give the verdicts, row numbers and duplicates of the same log written as text."""
    df = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", " ", "u3", "u3", "u4", "u5"],
            "ts": pd.to_datetime(["2026-01-01"] * 8),
            "event": ["purchase", "purchase", "review", "visit", "purchase", "refund", "review", "purchase"],
            "amount": [5.0, 5.0, None, None, float("nan"), -1.0, None, None],
            "rating": pd.array([None, None, 4, None, None, None, 7, None], dtype="Int32"),
            "coupon": pd.array([True, True, None, None, False, None, None, None], dtype="boolean"),
        }
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    typed = pa.Table.from_pandas(df, preserve_index=False)
    null = df["amount"].isna().to_numpy().copy()
    null[4] = False  # u3's NaN stays a NaN, not a null
    nan_kept = pa.array(df["amount"].to_numpy(), mask=null)
    pq.write_table(typed.set_column(3, "amount", nan_kept), tmp_path / "typed.parquet")
    text = df.astype(object).where(df.notna(), None).astype(str).replace({"None": "", "<NA>": ""})
    text.loc[4, "amount"] = "nan"
    text.to_csv(tmp_path / "text.csv", index=False)
    got = {}
    for name in ("typed.parquet", "text.csv"):
        loose = cfg.model_copy(update={"quarantine": cfg.quarantine.model_copy(update={"max_fraction": 1.0})})
        con = connect()
        r = run_validation(con, tmp_path / name, loose)
        q = con.execute("SELECT source_row, reason FROM quarantine ORDER BY source_row").fetchall()
        ev = con.execute("SELECT user_id, event, amount, rating, coupon FROM events ORDER BY ALL").fetchall()
        got[name] = (r.rows_read, r.accepted, r.duplicates, q, ev)
    assert got["typed.parquet"] == got["text.csv"]
    rows_read, accepted, duplicates, q, _ = got["typed.parquet"]
    assert (rows_read, accepted, duplicates) == (8, 2, 1)
    assert q == [
        (4, "missing user_id"),
        (5, "amount is not a number"),
        (6, "negative amount"),
        (7, "rating outside 1-5"),
        (8, "missing amount"),
    ]
