"""Lifetime value for serving: the LTV champion's own / referral / total value, percentiles, segment, reasons.

The champion is the LTV model, or BG/NBD + Gamma-Gamma where no model beat the baselines (own value
only, no reasons; `scorer` in the snapshot's metadata and the API's `scorers` say which).

Shared by batch scoring (snapshot columns `ltv`, `ltv_own`, `ltv_referral`, `pct_ltv*`,
`segment_ltv`, `reasons_ltv`, `version_ltv`) and the API (the `ltv*` fields of each answer).
Every user known at the cutoff gets a value (the population is everyone). The segment crosses
the two axes with the top shares of `ltv.segments`: champions (high spend, high word of mouth),
spenders, advocates, others; a log without advocacy events has no referral axis (missing), so
its users are spenders or others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.explain import PathExplainer
from serving.scoring import N_REASONS, percentiles, reference, top_reasons
from siyu.config import Config
from siyu.errors import SiyuError

SEGMENTS = ("champions", "spenders", "advocates", "others")
COLUMNS = ("ltv", "ltv_own", "ltv_referral")
_SEGMENT_NAMES = np.array(SEGMENTS, dtype=object)


@dataclass
class LtvScored:
    """Values of n rows (currency) and their top reasons (positions in the scorer's feature order)."""

    ltv: np.ndarray
    own: np.ndarray
    referral: np.ndarray  # NaN: the model has no referral part (no advocacy events)
    reason_idx: np.ndarray | None = None
    reason_contrib: np.ndarray | None = None


class LtvScorer:
    """The LTV champion over feature rows in `feature_names` order (decision-path reasons, native leaves)."""

    def __init__(self, model, feature_names: list[str]):
        pos = {f: i for i, f in enumerate(feature_names)}
        missing = [f for f in model.feature_names if f not in pos]
        if missing:
            raise SiyuError(f"the ltv model needs features missing from the snapshot: {missing[:5]}")
        self.model, self.version = model, int(model.version)
        self.cols = np.array([pos[f] for f in model.feature_names])
        self.has_referral = model.referral is not None
        # What serves: the LTV model ("ltv"), or the best baseline when no model beat them ("bgnbd_gg").
        self.scorer = "bgnbd_gg" if model.kind == "ltv_bgnbd_gg" else "ltv"
        if self.scorer != "ltv":
            self.ex, self.fast = {}, False
            return
        self.ex = {k: PathExplainer(b) for k, b in (("own", model.own), ("referral", model.referral)) if b is not None}
        # Tweedie's log link: exp(sum of leaf values) is the prediction; checked on probe rows.
        rng = np.random.default_rng(0)
        probe = rng.normal(scale=3.0, size=(64, len(self.cols))) * rng.choice([1, 10, 100], size=(64, 1))
        probe[::7] = np.nan
        self.fast = all(
            np.allclose(np.exp(ex.raw(ex.leaves(probe, 1))), ex.booster.predict(probe), rtol=1e-9, atol=1e-9)
            for ex in self.ex.values()
        )

    def score(self, X: np.ndarray, reasons: bool = True) -> LtvScored:
        """Own, referral and total value of each row of X, and (reasons) the top contributions."""
        Xm = X[:, self.cols]
        if self.scorer != "ltv":  # a closed form: values, no per-feature reasons
            v = self.model.predict_parts(Xm)
            out = LtvScored(v["ltv"], v["own"], v["referral"])
            if reasons:
                out.reason_idx, out.reason_contrib = empty_reasons(len(Xm))
            return out
        threads = 1 if len(Xm) < 5000 else 0
        vals, contrib = {}, {}
        for k, ex in self.ex.items():
            if self.fast:
                leaves = ex.leaves(Xm, threads)
                vals[k] = np.exp(ex.raw(leaves))
                contrib[k] = ex.contributions(leaves=leaves) if reasons else None
            else:
                vals[k] = ex.booster.predict(Xm, num_threads=threads)
                contrib[k] = ex.contributions(Xm, num_threads=threads) if reasons else None
        own = vals["own"]
        ref = vals.get("referral", np.full(len(own), np.nan))
        out = LtvScored(own + np.where(np.isnan(ref), 0.0, ref), own, ref)
        if reasons:
            c = contrib["own"]
            if self.has_referral:  # each part's log-scale contributions, weighted by its share of the value
                w = (own / np.maximum(out.ltv, 1e-12))[:, None]
                c = w * c + (1 - w) * contrib["referral"]
            idx, con = top_reasons(np.asarray(c, dtype=float))
            out.reason_idx, out.reason_contrib = self.cols[idx], con
        return out


def segments(pct_own: np.ndarray, pct_ref: np.ndarray, cfg: Config) -> np.ndarray:
    """CLV x referral-value segment per user from the percentiles (0-100) of predicted own / referral value."""
    s = cfg.ltv.segments
    high_own = np.asarray(pct_own, dtype=float) > 100.0 * (1 - s.own_top_share)  # NaN compares False: low
    high_ref = np.asarray(pct_ref, dtype=float) > 100.0 * (1 - s.referral_top_share)
    return _SEGMENT_NAMES[np.where(high_own, np.where(high_ref, 0, 1), np.where(high_ref, 2, 3))]


def placed(scored: LtvScored, refs: dict[str, np.ndarray], cfg: Config) -> dict[str, np.ndarray]:
    """Percentiles (against `refs`: column -> sorted reference values) and the segment of scored rows."""
    pct = {
        "pct_ltv": percentiles(scored.ltv, refs["ltv"]),
        "pct_ltv_own": percentiles(scored.own, refs["ltv_own"]),
        "pct_ltv_referral": percentiles(scored.referral, refs["ltv_referral"]),
    }
    return {**pct, "segment_ltv": segments(pct["pct_ltv_own"], pct["pct_ltv_referral"], cfg)}


def references(scored: LtvScored) -> dict[str, np.ndarray]:
    """Sorted reference values of a pool (what percentiles are measured against)."""
    return {"ltv": reference(scored.ltv), "ltv_own": reference(scored.own), "ltv_referral": reference(scored.referral)}


def load_ltv_scorer(cfg: Config, feature_names: list[str]) -> LtvScorer | None:
    """The LTV champion as an LtvScorer, or None when the registry has none (LTV columns stay null)."""
    from training.model_registry import RegistryUnreachable, load_model

    try:
        model = load_model(cfg, "ltv")
    except RegistryUnreachable:
        raise
    except SiyuError:  # no LTV champion yet
        return None
    return LtvScorer(model, feature_names)


def snapshot_columns(ltv: LtvScorer | None, X: np.ndarray, names: list[str], cfg: Config, chunk: int = 100_000):
    """The snapshot's LTV columns (pyarrow arrays; all null without a model), percentiles against this pool.

    Args:
        ltv: the LTV champion (None: no model).
        X: n x len(names) feature rows.
        names: their feature names (the scorer's order).
        cfg: config (segments).
        chunk: rows scored at once.
    """
    import pyarrow as pa

    from serving.pool import _reasons_column

    n = len(X)
    if ltv is None:
        nulls = pa.nulls(n, pa.float64())
        cols = {c: nulls for c in (*COLUMNS, "pct_ltv", "pct_ltv_own", "pct_ltv_referral")}
        idx, con = empty_reasons(n)
        cols["segment_ltv"] = pa.nulls(n, pa.string())
        cols["reasons_ltv"] = _reasons_column(idx, con, X, np.zeros(n, bool), names)
        cols["version_ltv"] = pa.nulls(n, pa.int32())
        return cols
    parts = [ltv.score(X[lo : lo + chunk]) for lo in range(0, n, chunk)]
    cat = lambda k: np.concatenate([getattr(p, k) for p in parts]) if parts else np.zeros((0,))  # noqa: E731
    scored = LtvScored(cat("ltv"), cat("own"), cat("referral"))
    idx = np.vstack([p.reason_idx for p in parts]) if parts else empty_reasons(0)[0]
    con = np.vstack([p.reason_contrib for p in parts]) if parts else empty_reasons(0)[1]
    where = placed(scored, references(scored), cfg)
    cols = {"ltv": scored.ltv, "ltv_own": scored.own, "ltv_referral": scored.referral}
    cols = {k: pa.array(v, from_pandas=True) for k, v in {**cols, **where}.items() if k != "segment_ltv"}
    cols["segment_ltv"] = pa.array(where["segment_ltv"], pa.string())
    cols["reasons_ltv"] = _reasons_column(idx, con, X, idx[:, 0] >= 0, names)  # a closed form has none: null
    cols["version_ltv"] = pa.array(np.full(n, ltv.version), pa.int32())
    return cols


def add_meta(table, ltv: LtvScorer | None):
    """The snapshot table with `ltv` (version, referral part) added to its siyu metadata."""
    import json

    from serving.snapshot import META_KEY

    meta = json.loads(table.schema.metadata[META_KEY])
    meta["ltv"] = None if ltv is None else {"version": ltv.version, "referral": ltv.has_referral, "scorer": ltv.scorer}
    return table.replace_schema_metadata({**table.schema.metadata, META_KEY: json.dumps(meta).encode()})


def stored_references(path, version: int | None) -> dict[str, np.ndarray] | None:
    """Reference values from a snapshot's LTV columns when `version` wrote them (else None: rescore)."""
    import pyarrow.parquet as pq

    from serving.snapshot import read_meta

    info = read_meta(path).get("ltv") or {}
    if version is None or info.get("version") != version:
        return None
    t = pq.read_table(path, columns=list(COLUMNS))
    return {c: reference(t.column(c).to_numpy(zero_copy_only=False).astype(float)) for c in COLUMNS}


def empty_reasons(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Reason arrays for rows without an LTV model."""
    return np.full((n, N_REASONS), -1, dtype=np.int64), np.zeros((n, N_REASONS))
