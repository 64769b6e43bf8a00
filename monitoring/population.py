"""Who is in the two snapshots: tier mix, tier-to-tier transitions, users new and gone (DuckDB)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from monitoring.drift import level, psi_from_shares, worst
from siyu.config import MonitoringConfig
from siyu.contract import TIER_RANK

NEW, GONE = "(new)", "(gone)"


def _tier_order(tiers) -> list[str]:
    """Tiers from `lost` up the ladder, unknown names last."""
    return sorted(set(tiers), key=lambda t: (TIER_RANK.get(t, 99), t))


def population_drift(old: Path, new: Path, cfg: MonitoringConfig) -> dict:
    """Tier mix and its PSI, the transition matrix, and the shares of users new and gone.

    Args:
        old: the reference snapshot file.
        new: the compared snapshot file.
        cfg: the monitoring config (thresholds).

    Returns:
        {"tiers": {"mix": {tier: {"old", "new"}}, "psi", "status", "transitions": {from: {to: share}},
        "transition_counts": ...}, "users": {"old", "new", "both", "new_share", "gone_share", "status"}}.
        Transition shares are of the old tier's users (rows sum to 1); the `(new)` row is new users'
        tiers as a share of them, the `(gone)` column old users absent from the new snapshot.
    """
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"""
            SELECT coalesce(o.tier, '{NEW}') AS t_old, coalesce(n.tier, '{GONE}') AS t_new, count(*) AS n
            FROM (SELECT user_id, tier FROM read_parquet(?)) o
            FULL OUTER JOIN (SELECT user_id, tier FROM read_parquet(?)) n ON o.user_id = n.user_id
            GROUP BY ALL""",
            [str(old), str(new)],
        ).fetchall()
    finally:
        con.close()
    counts: dict[str, dict[str, int]] = {}
    for a, b, n in rows:
        counts.setdefault(a, {})[b] = int(n)
    n_old = sum(n for a, row in counts.items() if a != NEW for n in row.values())
    n_new = sum(n for row in counts.values() for b, n in row.items() if b != GONE)
    n_gone = sum(row.get(GONE, 0) for a, row in counts.items() if a != NEW)
    n_added = sum(counts.get(NEW, {}).values())
    tiers = _tier_order([t for t in counts if t != NEW] + [t for row in counts.values() for t in row if t != GONE])
    mix_old = {t: sum(counts.get(t, {}).values()) / max(n_old, 1) for t in tiers}
    mix_new = {t: sum(row.get(t, 0) for row in counts.values()) / max(n_new, 1) for t in tiers}
    tier_psi = psi_from_shares([mix_old[t] for t in tiers], [mix_new[t] for t in tiers])
    trans = {
        a: {b: n / max(sum(counts[a].values()), 1) for b, n in sorted(counts[a].items(), key=lambda kv: _rank(kv[0]))}
        for a in [*(t for t in tiers if t in counts), *([NEW] if NEW in counts else [])]
    }
    new_share, gone_share = n_added / max(n_new, 1), n_gone / max(n_old, 1)
    users = {
        "old": n_old,
        "new": n_new,
        "both": n_old - n_gone,
        "new_share": new_share,
        "gone_share": gone_share,
        "new_share_status": level(new_share, cfg.new_share),
        "gone_share_status": level(gone_share, cfg.gone_share),
    }
    users["status"] = worst([users["new_share_status"], users["gone_share_status"]])
    return {
        "tiers": {
            "mix": {t: {"old": mix_old[t], "new": mix_new[t]} for t in tiers},
            "psi": tier_psi,
            "status": level(tier_psi, cfg.psi),
            "transitions": trans,
            "transition_counts": {a: dict(counts[a]) for a in trans},
        },
        "users": users,
    }


def _rank(t: str) -> tuple:
    return (TIER_RANK.get(t, 99), t)
