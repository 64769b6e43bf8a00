"""The scores snapshot: the Parquet file batch scoring writes and the API serves.

One file holds, per user: `user_id`, `asof`, `tier`, the population flags, per
label `p_*`, `pct_*`, `bucket_*`, `reasons_*` and `version_*`, and the feature
values as `x.<feature>` columns, so the API can recompute scores and reasons
with the same models. File metadata (key `siyu`) records asof, model versions
and feature order.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from siyu.config import Config
from siyu.contract import LABELS
from siyu.errors import SiyuError

FEATURE_PREFIX = "x."
META_KEY = b"siyu"
LATEST = "latest.json"


@dataclass
class Snapshot:
    """A snapshot held in memory for serving.

    Attributes:
        path: the file it came from.
        asof: its cutoff.
        user_ids: n ids; `index` maps id -> row.
        tier: n tier names.
        pops: label -> n booleans (inside that label's population).
        X: n x F float64 feature matrix, columns in `feature_names` order.
        proba: label -> n stored scores (NaN outside population), used as the percentile reference.
        versions: label -> model version that produced the stored scores.
        families: event families of the scored log (None: unknown).
        lineage: the scored log's fingerprint, rows, date range and config hash (events.lineage).
        scorers: label -> the scorer kind (lightgbm, logistic, rule, blend, btyd) / None.
        rules: label -> operator-rule metadata (serving.rules) for labels without a champion.
    """

    path: Path
    asof: datetime
    user_ids: np.ndarray
    index: dict[str, int]
    tier: np.ndarray
    pops: dict[str, np.ndarray]
    X: np.ndarray
    feature_names: list[str]
    proba: dict[str, np.ndarray]
    versions: dict[str, int | None]
    families: list[str] | None = None
    lineage: dict | None = None
    scorers: dict | None = None
    rules: dict = field(default_factory=dict)


def write_table_atomic(table: pa.Table, out: Path) -> None:
    """Write Parquet to a temp file beside `out`, then rename: readers never see a partial file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def with_meta(
    table: pa.Table,
    asof: datetime,
    versions: dict,
    feature_names: list[str],
    families: list[str] | None = None,
    lineage: dict | None = None,
    scorers: dict | None = None,
    rules: dict | None = None,
) -> pa.Table:
    """Attach the snapshot's metadata to a table.

    Args:
        table: the scores.
        asof: the cutoff.
        versions: label -> model version (None: no champion).
        feature_names: feature column order.
        families: event families of the scored log.
        lineage: events.lineage record of the scored log.
        scorers: label -> the scorer kind (lightgbm, logistic, rule, blend, btyd) / None.
        rules: label -> serving.rules.RuleModel metadata, for labels scored by rule.
    """
    meta = {
        "format": 1,
        "asof": asof.isoformat(),
        "versions": versions,
        "scorers": scorers or {},  # label -> lightgbm | blend | logistic | rule | btyd (a baseline serves: it says so)
        "feature_names": feature_names,
        "families": families,
        "lineage": lineage,
        "rules": rules or {},
    }
    return table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})


def read_meta(path: Path) -> dict:
    """The `siyu` metadata of a snapshot file (SiyuError when it is not one)."""
    if not Path(path).is_file():
        raise SiyuError(f"scores snapshot not found: {path} (run `siyu score` first)")
    try:
        md = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid) as e:
        raise SiyuError(f"cannot read scores snapshot {path}: {e}") from e
    if META_KEY not in md:
        raise SiyuError(f"{path} is not a siyu scores snapshot (no '{META_KEY.decode()}' metadata)")
    return json.loads(md[META_KEY])


def load_snapshot(path: str | Path) -> Snapshot:
    """Read a snapshot into memory (feature matrix as float64 NumPy).

    Args:
        path: a Parquet file written by batch scoring.

    Raises:
        SiyuError: missing file or not a snapshot.
    """
    path = Path(path)
    if not path.is_file():
        raise SiyuError(f"scores snapshot not found: {path} (run `siyu score` first)")
    meta = read_meta(path)
    names = list(meta["feature_names"])
    cols = ["user_id", "tier"] + [f"in_{lab}_pop" for lab in LABELS] + [f"p_{lab}" for lab in LABELS]
    table = pq.read_table(path, columns=cols + [FEATURE_PREFIX + f for f in names])
    user_ids = table.column("user_id").to_numpy(zero_copy_only=False).astype(object)
    X = np.empty((table.num_rows, len(names)), dtype=np.float64)
    for j, f in enumerate(names):
        X[:, j] = table.column(FEATURE_PREFIX + f).to_numpy(zero_copy_only=False)
    return Snapshot(
        path=path,
        asof=datetime.fromisoformat(meta["asof"]),
        user_ids=user_ids,
        index={u: i for i, u in enumerate(user_ids)},
        tier=table.column("tier").to_numpy(zero_copy_only=False).astype(object),
        pops={lab: table.column(f"in_{lab}_pop").to_numpy(zero_copy_only=False).astype(bool) for lab in LABELS},
        X=X,
        feature_names=names,
        proba={lab: table.column(f"p_{lab}").to_numpy(zero_copy_only=False).astype(float) for lab in LABELS},
        versions={k: (int(v) if v is not None else None) for k, v in meta["versions"].items()},
        families=meta.get("families"),
        lineage=meta.get("lineage"),
        scorers=meta.get("scorers"),
        rules=meta.get("rules") or {},
    )


def snapshots_dir(cfg: Config) -> Path:
    """Where `siyu score` records the latest snapshot: cfg.home()/snapshots."""
    return cfg.home() / "snapshots"


def record_latest(cfg: Config, path: Path, asof: datetime) -> None:
    """Remember `path` as the latest snapshot (what `siyu serve` serves by default)."""
    d = snapshots_dir(cfg)
    d.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(
            {
                "path": str(Path(path).resolve()),
                "asof": asof.isoformat(),
                "written": datetime.now().isoformat(timespec="seconds"),
            },
            f,
        )
    os.replace(tmp, d / LATEST)


def latest_snapshot(cfg: Config) -> Path:
    """The snapshot `siyu score` wrote last.

    Raises:
        SiyuError: none recorded yet, or the file is gone.
    """
    rec = snapshots_dir(cfg) / LATEST
    if not rec.is_file():
        raise SiyuError(f"no scores snapshot recorded under {snapshots_dir(cfg)}: run `siyu score` or pass --scores")
    path = Path(json.loads(rec.read_text())["path"])
    if not path.is_file():
        raise SiyuError(f"the latest snapshot {path} no longer exists: run `siyu score` or pass --scores")
    return path
