"""Real purchase logs for the robustness suite: data nobody here wrote or tuned on.

CDNOW (Fader & Hardie): every purchase of the 23,570 customers who first bought from the online
CD shop CDNOW in the first quarter of 1997, until the end of June 1998 (69,659 rows: customer,
day, CDs, dollars). It is the standard real log of the customer-base literature. It travels in the
`lifetimes` wheel on PyPI (MIT), which this module downloads once with pip (pinned version and
SHA-256, no dependencies installed) into a cache folder and reads from there; the wheel is a zip
and nothing of it is imported.

A real log has no oracle: its rows in the suite compare the model with the baselines only.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

WHEEL = "Lifetimes-0.11.3-py3-none-any.whl"
WHEEL_SHA256 = "261e3dc89977c2b60767ca6728aaa29d429de0c814635070a749c36555895da8"
MEMBER = "lifetimes/datasets/CDNOW_master.txt"


def cache_dir() -> Path:
    """Where downloaded logs are kept (`SIYU_DATA_CACHE`, default ~/.cache/siyu)."""
    return Path(os.environ.get("SIYU_DATA_CACHE") or Path.home() / ".cache" / "siyu")


def _wheel() -> Path:
    """The lifetimes wheel, downloaded from the package index when it is not cached; checked by SHA-256."""
    path = cache_dir() / WHEEL
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "lifetimes==0.11.3",
               "-d", str(path.parent), "-q"]  # fmt: skip
        if subprocess.run(cmd).returncode or not path.exists():
            raise RuntimeError(
                f"could not download {WHEEL} from the package index; put it in {path.parent} (SIYU_DATA_CACHE)"
            )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{path}: SHA-256 {digest} is not the pinned {WHEEL_SHA256}; delete it and retry")
    return path


def purchases(user_id, ts, amount) -> pd.DataFrame:
    """An order log as siyu events: one `purchase` row per (user, time, amount), order ids in row order."""
    n = len(ts)
    none = pd.Series([None] * n, dtype=object)
    return pd.DataFrame(
        {
            "user_id": np.asarray(user_id),
            "ts": np.asarray(ts),
            "event": "purchase",
            "amount": np.round(np.asarray(amount, dtype=float), 2),
            "channel": "mini_program",
            "ref_user_id": none,
            "rating": np.nan,
            "coupon": False,
            "content_id": none,
            "order_id": np.char.add("o", np.arange(n).astype(str)),
        }
    )


def cdnow_orders() -> pd.DataFrame:
    """CDNOW's rows as a frame: customer_id (str), day (Timestamp), cds (int), dollars (float)."""
    with zipfile.ZipFile(_wheel()) as z:
        text = z.read(MEMBER).decode()
    df = pd.read_csv(io.StringIO(text), sep=r"\s+", dtype={"customer_id": str})
    df.columns = ["customer_id", "day", "cds", "dollars"]
    df["day"] = pd.to_datetime(df["day"].astype(str), format="%Y%m%d")
    return df


def write_cdnow(out_dir: Path | str) -> tuple[Path, int]:
    """CDNOW as a siyu event log (one purchase row per order line, at noon of its day).

    Args:
        out_dir: output folder (created); events.parquet is written there, with no oracle beside it.

    Returns:
        (events path, length of the log in days).
    """
    df = cdnow_orders()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    purchases("c" + df["customer_id"], df["day"] + pd.Timedelta(hours=12), df["dollars"]).to_parquet(
        out / "events.parquet", index=False
    )
    days = (df["day"].max() - df["day"].min()).days + 1
    return out / "events.parquet", days
