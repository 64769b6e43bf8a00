"""The built-in world (docs/design.md §6): simulate a private domain, write events, users and the oracle.

The world loops over days and is vectorised over users (`sim_dynamics.step`).
Users arrive throughout (more on campaign days), referred users appear a few
days after the share that reached them and buy at once (their order is the
referrer's `referral_purchase`). At each oracle cutoff the oracle re-simulates every
connected user's future from the true state; the realised labels come from
the world's own bookkeeping H days later.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from simulation.dynamics import CONNECT_CODES, Calendar, record_purchase, step
from simulation.oracle import KOC_RANK, Snapshot, oracle_probs, outcomes, push_contrast, snapshot
from simulation.report import MONTH, RealismTracker, WorldSummary, realism_figures, roc_auc
from simulation.state import SEGMENTS, SOURCES, alloc, grow, init_users, tier_ranks, view
from simulation.writer import MINI, ORDER_CODES, SLOT, DayEvents, E, EventWriter, day_seconds
from siyu.config import Config
from siyu.contract import EVENTS, LABELS
from siyu.errors import SiyuError

DEFAULT_START = date(2025, 1, 1)


def parse_day(text: str, what: str) -> date:
    """A YYYY-MM-DD date from the command line; SiyuError naming the option otherwise."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise SiyuError(f"{what}: expected a date YYYY-MM-DD, got {text!r}") from None


def default_cutoff(start: date, days: int, horizon: int) -> date:
    """The last midnight whose horizon fits in the world: T_val of docs/design.md §4."""
    return start + timedelta(days=days) - timedelta(days=horizon)


class _World:
    """Mutable bookkeeping of one run: state, rows in use, per-user origin."""

    def __init__(self, cfg: Config, users: int, seed: int):
        self.cfg, self.p = cfg, cfg.simulation
        cap = users + users // 8 + 64
        self.st = alloc(cap, cfg.windows.period_days)
        self.n = 0
        self.join_day = np.full(cap, -1, "i4")
        self.source = np.zeros(cap, "i1")
        self.referrer = np.full(cap, -1, "i8")
        self.rng = np.random.default_rng(seed)
        self.next_order = 0

    def replica_of(self, st, rng: np.random.Generator) -> _World:
        """A world around a copied state (the LTV oracle's replicas): referred friends join it as here."""
        w = _World.__new__(_World)
        w.cfg, w.p, w.st, w.n, w.rng, w.next_order = self.cfg, self.p, st, st.n, rng, 0
        w.join_day, w.source, w.referrer = np.full(st.n, -1, "i4"), np.zeros(st.n, "i1"), np.full(st.n, -1, "i8")
        return w

    def add_users(self, k: int, d: int, source: int, ev: DayEvents) -> np.ndarray:
        """Make k new users join on day d (connection events emitted); returns their rows."""
        if self.n + k > self.st.n:
            cap = int((self.n + k) * 1.5)
            self.st = grow(self.st, cap)
            ev.st = self.st
            for name, fill in (("join_day", -1), ("source", 0), ("referrer", -1)):
                old = getattr(self, name)
                setattr(self, name, np.concatenate([old, np.full(cap - old.size, fill, old.dtype)]))
        rows = np.arange(self.n, self.n + k)
        init_users(self.st, self.n, self.n + k, np.full(k, source), self.p, self.rng)
        self.n += k
        self.join_day[rows], self.source[rows] = d, source
        for c in range(3):
            ev.add(CONNECT_CODES[c], rows[self.st.ch[c, rows]], ch=c)
        ev.add(E["member_join"], rows[self.st.member[rows]], ch=MINI)
        return rows

    def add_referred(self, refs: np.ndarray, amounts: np.ndarray, d: int, ev: DayEvents) -> None:
        """Referred users join and buy at once; each referrer gets its `referral_purchase`."""
        rows = self.add_users(refs.size, d, 2, ev)
        self.referrer[rows] = refs
        st = self.st
        order = ev.new_orders(rows.size)
        ev.add(E["purchase"], rows, ch=MINI, amount=amounts, coupon=False, order=order)
        record_purchase(st, rows, d, d % st.P)
        st.net_spend[rows] += amounts
        st.need[rows] *= np.float32(1 - self.p.need_satiation)
        st.last_sat[rows] = True
        sec = day_seconds(rows, d) + SLOT[E["purchase"]] + MINI * 60 + 30  # just after the friend's order
        ev.add(E["referral_purchase"], refs, ch=MINI, amount=amounts, ref=rows, order=order, sec=sec)


class _Holdouts:
    """The brand's control groups: every `holdout_days`, a fresh random share of connected users gets no pushes.

    The periods tile the world so that one starts at `anchor`, the default cutoff (the validation
    cutoff of training, where the oracle's contrast is read by default); the periods before it start
    at the training cutoffs when `windows.cutoff_spacing_days` equals `simulation.holdout_days`.
    Draws come from their own stream, so the rest of the world does not move.
    """

    def __init__(self, cfg: Config, seed: int, anchor: int):
        self.share, self.days, self.anchor = cfg.simulation.holdout_share, cfg.simulation.holdout_days, anchor
        self.rng = np.random.default_rng([seed, 0x40])

    def draw(self, w: _World, d: int) -> tuple[np.ndarray, np.ndarray] | None:
        """On a period's first day: (rows whose holdout ends today, rows held from today); else None."""
        if self.share <= 0 or (self.anchor - d) % self.days:
            return None
        st, n = w.st, w.n
        ending = np.flatnonzero(st.hold_until[:n] == d)
        starting = np.flatnonzero(st.ch[:, :n].any(axis=0) & (self.rng.random(n) < self.share))
        st.hold_until[starting] = d + self.days
        return ending, starting


def _arrivals(users: int, days: int, cal: Calendar, p, rng: np.random.Generator) -> np.ndarray:
    n0 = round(users * p.initial_user_share) if days > 1 else users
    w = np.where(cal.campaign[1:], p.campaign_arrival_boost, 1.0)
    later = rng.multinomial(users - n0, w / w.sum()) if days > 1 else np.zeros(0, int)
    return np.concatenate([[n0], later])


def simulate_world(
    cfg: Config,
    users: int,
    days: int,
    start: date | None = None,
    seed: int = 42,
    out_dir: Path | str = "out/world",
    oracle_cutoffs: list[date] | None = None,
    replicas: int | None = None,
    keep_snapshots: bool = False,
    ltv_replicas: int | None = None,
) -> WorldSummary:
    """Simulate a private domain and write events.parquet, users.parquet and oracle.parquet.

    Args:
        cfg: the config (simulation parameters, windows, tiers, labels).
        users: users arriving by public traffic and campaigns (referred users come on top).
        days: length of the world in days.
        start: first day (default 2025-01-01).
        seed: random seed; the same seed gives identical events.
        out_dir: output folder (created).
        oracle_cutoffs: cutoff dates for the oracle; None: the default cutoff; []: no oracle.
        replicas: re-simulations per user (default: config `simulation.oracle_replicas`).
        keep_snapshots: keep each cutoff's bookkeeping (tiers, populations, labels) in the summary.
        ltv_replicas: re-simulations behind oracle_ltv.parquet (expected own / referral spend at the LTV
            validation cutoff, days - ltv.horizon_days; default `simulation.ltv_oracle_replicas`; 0 or no
            oracle: none; a world too short for LTV training gets none either).

    Returns:
        The WorldSummary (realism figures, oracle AUC per label).
    """
    if users < 1 or days < 1:
        raise SiyuError("simulate needs --users >= 1 and --days >= 1")
    start = start or DEFAULT_START
    H = cfg.windows.horizon_days
    R = cfg.simulation.oracle_replicas if replicas is None else replicas
    if R < 0:
        raise SiyuError("--replicas must be >= 0 (0: no oracle)")
    if oracle_cutoffs is None:
        oracle_cutoffs = [default_cutoff(start, days, H)] if days > H else []
    cut_days = sorted({(c - start).days for c in oracle_cutoffs})
    for c in cut_days:
        if c < 1 or c + H > days:
            raise SiyuError(
                f"oracle cutoff {start + timedelta(days=c)} needs its {H}-day horizon inside the world "
                f"({start} .. {start + timedelta(days=days)})"
            )
    ltv_day = _ltv_day(cfg, days, 0 if R == 0 or not oracle_cutoffs else ltv_replicas)
    R_ltv = cfg.simulation.ltv_oracle_replicas if ltv_replicas is None else ltv_replicas
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "oracle_ltv.parquet").unlink(missing_ok=True)  # never a stale oracle beside new events
    t0, oracle_s, ltv_oracle = time.perf_counter(), 0.0, None
    w = _World(cfg, users, seed)
    cal = Calendar(w.rng.random(days) < cfg.simulation.campaign_day_rate)
    arrivals = _arrivals(users, days, cal, cfg.simulation, w.rng)
    tracker = RealismTracker(cfg.simulation.fatigue_threshold)
    pending: dict[int, tuple[Snapshot, dict]] = {}
    results: list[tuple[Snapshot, dict, dict]] = []
    writer = EventWriter(
        out / "events.parquet",
        datetime.combine(start, datetime.min.time()),
        cfg.simulation.chunk_rows,
        ORDER_CODES if cfg.simulation.export == "orders" else None,
    )
    holdouts = _Holdouts(cfg, seed, max(0, days - H))  # never the oracle's cutoffs: the oracle changes nothing
    try:
        for d in range(days + 1):
            if d - H in pending:  # realised labels of a cutoff whose horizon just ended
                snap, probs = pending.pop(d - H)
                y = outcomes(w.st, snap.rows, snap.t, snap.tier, cfg)
                y["spend"] = w.st.net_spend[snap.rows] - snap.spend0
                results.append((snap, probs, y))
            held = holdouts.draw(w, d) if d < days else None  # before the oracle: its replicas keep them
            if d in cut_days:
                snap = snapshot(w.st, d, cfg)
                o0 = time.perf_counter()
                probs = oracle_probs(w.st, snap, cal, cfg, R, seed) if R > 0 else {}
                if R > 0:
                    probs.update(push_contrast(w.st, snap, cal, cfg, R, seed))
                oracle_s += time.perf_counter() - o0
                pending[d] = (snap, probs)
            if d == ltv_day:
                from simulation.ltv_oracle import ltv_expected

                o0 = time.perf_counter()
                ltv_oracle = ltv_expected(w, d, cal, cfg, R_ltv, seed)
                oracle_s += time.perf_counter() - o0
            if d % MONTH == 0:
                tracker.month_edge(w.st, w.n)
            if d == days:
                break
            ev = DayEvents(w.st, d, emit=True, next_order=w.next_order)
            if held is not None:  # at 00:00: the brand sets a period's control group before the day's pushes,
                # so a model scoring at that cutoff knows who is held (an end is read before a start)
                ev.add(E["holdout_end"], held[0], sec=0)
                ev.add(E["holdout_start"], held[1], sec=0)
            src = 1 if cal.campaign[d] and d > 0 else 0
            w.add_users(int(arrivals[d]), d, src, ev)
            refs, amounts = step(view(w.st, w.n), d, cal, cfg.simulation, w.rng, ev)
            if refs.size:
                w.add_referred(refs, amounts, d, ev)
            w.next_order = ev.next_order
            writer.add(ev.columns())
            tracker.day_end(w.st, w.n)
        n_events = writer.close()
    except BaseException:
        writer.abort()
        raise
    _write_users(w, out / "users.parquet", start)
    tier_end = tier_ranks(w.st, cfg.tiers.koc_min_referrals, cfg.tiers.engaged_min_actions)[: w.n]
    koc_share = float((tier_end == KOC_RANK).sum() / max(1, (tier_end > 0).sum()))
    summary = WorldSummary(
        out,
        w.n,
        days,
        n_events,
        time.perf_counter() - t0,
        oracle_s,
        R,
        event_counts=dict(zip(EVENTS, writer.counts.tolist())),
    )
    summary.realism = realism_figures(w.st, w.n, tracker, koc_share, n_events, days, int((w.source[: w.n] == 2).sum()))
    if results and R > 0:
        _write_oracle(results, out / "oracle.parquet", start, R, summary)
    if ltv_oracle is not None:
        _write_ltv_oracle(ltv_oracle, out / "oracle_ltv.parquet", start + timedelta(days=ltv_day), R_ltv)
    if keep_snapshots:
        summary.snapshots = {start + timedelta(days=s.t): (s, p, y) for s, p, y in results}
    return summary


def _ltv_day(cfg: Config, days: int, replicas: int | None) -> int | None:
    """The LTV validation cutoff day (days - L), or None: no LTV oracle, or fewer than 3 LTV training cutoffs fit."""
    w = cfg.windows
    d = days - cfg.ltv.horizon_days
    if replicas == 0 or d - min(w.n_cutoffs - 1, 2) * w.cutoff_spacing_days < w.cutoff_spacing_days:
        return None
    return d


def _write_ltv_oracle(o: dict, path: Path, cutoff: date, R: int) -> None:
    rows = o["rows"]
    _atomic_parquet(
        pa.table(
            {
                "cutoff": pa.array(np.full(rows.size, np.datetime64(cutoff, "us"))),
                "user_id": pc.binary_join_element_wise("u", pc.cast(pa.array(rows), pa.string()), ""),
                "ltv_own": pa.array(o["ltv_own"]),
                "ltv_referral": pa.array(o["ltv_referral"]),
                "ltv": pa.array(o["ltv_own"] + o["ltv_referral"]),
                "n_replicas": pa.array(np.full(rows.size, R, "i4")),
            }
        ),
        path,
    )


def _atomic_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def _write_users(w: _World, path: Path, start: date) -> None:
    n, st = w.n, w.st
    ref = w.referrer[:n]
    _atomic_parquet(
        pa.table(
            {
                "user_id": pc.binary_join_element_wise("u", pc.cast(pa.array(np.arange(n)), pa.string()), ""),
                "join_date": pa.array(np.datetime64(start) + w.join_day[:n].astype("timedelta64[D]")),
                "source": pa.array(SOURCES).take(pa.array(w.source[:n].astype("i4"))),
                "referrer_id": pc.binary_join_element_wise("u", pc.cast(pa.array(ref, mask=ref < 0), pa.string()), ""),
                "segment": pa.array(SEGMENTS).take(pa.array(st.segment[:n].astype("i4"))),
                **{
                    name: pa.array(getattr(st, col)[:n].astype("f8"))
                    for name, col in (
                        ("trust0", "trust0"),
                        ("need_base", "need_base"),
                        ("activity", "activity"),
                        ("influence", "influence"),
                        ("content_fit", "fit"),
                        ("push_intensity", "intensity"),
                    )
                },
            }
        ),
        path,
    )


def _contrast_parts(snap: Snapshot, probs: dict, y: dict, cutoff, R: int) -> list[pa.Table]:
    """oracle.parquet rows of the push contrast: churn_pushed / churn_held (p_oracle a probability; y the
    realised churn where the user's own arm matches, else null) and spend_pushed / spend_held (p_oracle the
    expected net spend over the horizon; y null); with `_a` / `_b`: the same from each half of the replicas."""
    if "churn_pushed" not in probs:
        return []
    m = snap.churn_pop
    rows = snap.rows[m]
    ids = pc.binary_join_element_wise("u", pc.cast(pa.array(rows), pa.string()), "")
    out = []
    labels = [
        (f"{o}_{a}{h}", i if o == "churn" else None)
        for o in ("churn", "spend")
        for i, a in enumerate(("pushed", "held"))
        for h in ("", "_a", "_b")
    ]
    for lab, arm in labels:
        yv = y["churn"][m].astype("i4")
        mask = np.ones(rows.size, bool) if arm is None else snap.arm[m] != arm
        out.append(
            pa.table(
                {
                    "cutoff": pa.array(np.full(rows.size, cutoff)),
                    "user_id": ids,
                    "label": pa.array(np.full(rows.size, lab)),
                    "p_oracle": pa.array(probs[lab][m]),
                    "y": pa.array(yv, mask=mask),
                    "n_replicas": pa.array(np.full(rows.size, R, "i4")),
                }
            )
        )
    return out


def _write_oracle(results, path: Path, start: date, R: int, summary: WorldSummary) -> None:
    parts = []
    for snap, probs, y in results:
        cutoff = np.datetime64(start + timedelta(days=snap.t), "us")
        parts.extend(_contrast_parts(snap, probs, y, cutoff, R))
        for lab in LABELS:
            m = snap.churn_pop if lab == "churn" else snap.up_pop
            rows = snap.rows[m]
            parts.append(
                pa.table(
                    {
                        "cutoff": pa.array(np.full(rows.size, cutoff)),
                        "user_id": pc.binary_join_element_wise("u", pc.cast(pa.array(rows), pa.string()), ""),
                        "label": pa.array(np.full(rows.size, lab)),
                        "p_oracle": pa.array(probs[lab][m]),
                        "y": pa.array(y[lab][m].astype("i4")),
                        "n_replicas": pa.array(np.full(rows.size, R, "i4")),
                    }
                )
            )
    table = pa.concat_tables(parts)
    _atomic_parquet(table, path)
    df = table.to_pandas()
    for lab in LABELS:
        sub = df[df["label"] == lab]
        summary.label_rates[lab] = float(sub["y"].mean()) if len(sub) else float("nan")
        summary.auc[lab] = roc_auc(sub["y"].to_numpy(), sub["p_oracle"].to_numpy())
