"""Scoring a feature frame into the snapshot table: champions, populations, probabilities, reasons.

Shared by the DuckDB path (`serving.batch`) and the Spark path (`serving.spark_scoring`).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from serving.advice import advice_columns, arrow_columns
from serving.scoring import N_REASONS, Scorer, buckets, percentiles, reference
from serving.snapshot import FEATURE_PREFIX, with_meta
from siyu.config import Config
from siyu.contract import LABELS
from siyu.errors import SiyuError

CHUNK_ROWS = 100_000


def parse_asof(asof: str | datetime, zone: str = "UTC") -> datetime:
    """A cutoff from a date or ISO instant, as brand-local wall time (a bare date means 00:00 in `zone`).

    Args:
        asof: the cutoff; an aware one is converted to `zone`.
        zone: the brand's zone (`events.time_zone`).
    """
    from features.export import brand_local, parse_instant

    if isinstance(asof, datetime):
        return brand_local(asof, zone)
    return parse_instant(str(asof), "--asof", zone)


def load_champions(cfg: Config, alias: str = "champion", require: bool = True) -> dict:
    """label -> ScoringModel for every label whose alias exists in the registry.

    Args:
        cfg: config (registry, model names).
        alias: the alias to load.
        require: raise when no label has one (False: the caller scores those labels by rule).

    Raises:
        SiyuError: no label has a model under that alias (require), or the registry is unreachable.
    """
    from training.model_registry import RegistryUnreachable, load_model

    models, why = {}, []
    for lab in LABELS:
        try:
            models[lab] = load_model(cfg, lab, alias=alias)
        except RegistryUnreachable:
            raise
        except SiyuError as e:
            why.append(str(e))
    if not models and require:
        raise SiyuError(
            f"no '{alias}' model in the registry at {cfg.tracking_uri()}: run `siyu train` first"
            + (f" ({why[0]})" if why else "")
        )
    return models


def _reasons_column(
    idx: np.ndarray, contrib: np.ndarray, X: np.ndarray, mask: np.ndarray, names: list[str]
) -> pa.Array:
    """list<struct<feature, value, contribution>> per row; null outside the population."""
    rows = np.flatnonzero(mask)
    flat = idx[rows].reshape(-1)
    vals = X[np.repeat(rows, N_REASONS), flat]
    structs = pa.StructArray.from_arrays(
        [
            pa.DictionaryArray.from_arrays(pa.array(flat.astype(np.int32)), pa.array(names)),
            pa.array(vals, from_pandas=True),
            pa.array(contrib[rows].reshape(-1)),
        ],
        names=["feature", "value", "contribution"],
    )
    offsets = np.zeros(len(mask) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(mask.astype(np.int32) * N_REASONS)
    return pa.ListArray.from_arrays(pa.array(offsets), structs, mask=pa.array(~mask))


def score_frame(
    feats: pd.DataFrame,
    pop: pd.DataFrame,
    scorer: Scorer,
    cfg: Config,
    asof: datetime,
    progress: Progress | None = None,
    families: list[str] | None = None,
    proba: dict[str, np.ndarray] | None = None,
    lineage: dict | None = None,
    ltv=None,
    push_effect=None,
) -> pa.Table:
    """Score a feature table and build the snapshot table (scores, percentiles, buckets, reasons, features).

    Args:
        feats: `user_id` + scorer.feature_names columns.
        pop: `user_id`, `tier`, `in_<label>_pop` for the same users.
        scorer: the models.
        cfg: config (risk buckets).
        asof: the cutoff.
        progress: a rich Progress to report chunks to (optional).
        families: event families present in the scored log (recorded so the API builds
            one user's features the way the batch did).
        proba: label -> probabilities computed elsewhere (the Spark engine's spark_udf) to
            store instead of the scorer's; reasons still come from the scorer.
        lineage: events.lineage.lineage of the scored log (kept in the metadata).
        ltv: the LTV champion (serving.ltv_scores.LtvScorer) or None: the `ltv*` columns stay null.
        push_effect: the push-effect champion (serving/advice.py), or None: the advice columns stay null.

    Returns:
        The snapshot table with its metadata.
    """
    pop = feats[["user_id"]].merge(pop, on="user_id", how="left", validate="one_to_one")
    n, names = len(feats), scorer.feature_names
    X = feats[names].to_numpy(dtype=np.float64, na_value=np.nan)
    pops = {lab: pop[f"in_{lab}_pop"].fillna(False).to_numpy(dtype=bool) for lab in LABELS}
    given, proba = proba, {lab: np.full(n, np.nan) for lab in LABELS}
    idx = {lab: np.full((n, N_REASONS), -1) for lab in LABELS}
    con = {lab: np.zeros((n, N_REASONS)) for lab in LABELS}
    task = progress.add_task("scoring", total=n) if progress else None
    for lo in range(0, n, CHUNK_ROWS):
        sl = slice(lo, min(lo + CHUNK_ROWS, n))
        s = scorer.score(X[sl], {lab: m[sl] for lab, m in pops.items()})
        for lab in s.proba:
            proba[lab][sl], idx[lab][sl], con[lab][sl] = s.proba[lab], s.reason_idx[lab], s.reason_contrib[lab]
        if progress:
            progress.update(task, completed=sl.stop)
    for lab, p in (given or {}).items():
        proba[lab] = np.where(pops[lab], np.asarray(p, dtype=float), np.nan)
    versions = scorer.versions
    cols: dict[str, pa.Array] = {
        "user_id": pa.array(feats["user_id"].astype(str).to_numpy(), pa.string()),
        "asof": pa.array(np.full(n, np.datetime64(asof, "us"))),
        "tier": pa.array(pop["tier"].astype(object).to_numpy(), pa.string()),
    }
    for lab in LABELS:
        cols[f"in_{lab}_pop"] = pa.array(pops[lab])
    for lab in LABELS:
        pct = percentiles(proba[lab], reference(proba[lab]))
        cols[f"p_{lab}"] = pa.array(proba[lab], from_pandas=True)
        cols[f"pct_{lab}"] = pa.array(pct, from_pandas=True)
        cols[f"bucket_{lab}"] = pa.array(buckets(pct, cfg.scoring.buckets), pa.string())
        # The thin-data operator rule has no reasons (a registered rule baseline has: one feature).
        explained = pops[lab] & ~np.isnan(proba[lab]) & (scorer.kinds[lab] != "operator_rule")
        cols[f"reasons_{lab}"] = _reasons_column(idx[lab], con[lab], X, explained, names)
        cols[f"version_{lab}"] = pa.array(
            np.full(n, versions[lab] if versions[lab] is not None else 0),
            pa.int32(),
            mask=np.full(n, versions[lab] is None),
        )
    from serving.ltv_scores import add_meta, snapshot_columns

    cols.update(snapshot_columns(ltv, X, names, cfg))  # lifetime value: every user known at asof
    cols.update(arrow_columns(advice_columns(push_effect, X, pops["churn"], names, cfg)))
    for j, f in enumerate(names):
        cols[FEATURE_PREFIX + f] = pa.array(X[:, j], from_pandas=True)
    # The thin-data operator rule (serving/rules.py) carries its measured rates; a registered rule baseline does not.
    rules = {lab: m.to_meta() for lab, m in scorer.models.items() if hasattr(m, "to_meta")}
    return add_meta(with_meta(pa.table(cols), asof, versions, names, families, lineage, scorer.kinds, rules), ltv)


def population_frame(con, asof: datetime, cfg: Config, events: str = "events") -> pd.DataFrame:
    """`user_id`, `tier`, `in_<label>_pop` at asof: the model populations of docs/design.md §4."""
    from features.tiers import tier_table

    return populations_from_tiers(tier_table(con, asof, cfg, events))


def populations_from_tiers(t: pd.DataFrame) -> pd.DataFrame:
    """Population flags from a tier table (any engine).

    Same rules as features.labels.label_sql (a test checks they agree), computed
    from the tiers alone because scoring has no future to label.
    """
    from siyu.contract import TIER_RANK

    up = t["connected"].astype(bool) & (t["tier_rank"] < TIER_RANK["koc"])
    return pd.DataFrame(
        {
            "user_id": t["user_id"].astype(str),
            "tier": t["tier"],
            "in_churn_pop": t["connected"].astype(bool) & (t["n_user_events"] >= 1),
            "in_promotion_pop": up,
            "in_koc_pop": up,
        }
    )


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )
