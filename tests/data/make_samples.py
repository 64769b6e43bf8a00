"""Regenerate the bundled sample logs (deterministic): `python tests/data/make_samples.py`.

messy_events.csv: 2,000 good rows in mixed timestamp formats and brand event
names, plus one row breaking each contract rule and a few exact duplicates;
under the default 1% quarantine threshold. too_messy.csv: over it.
"""

import csv
import random
from pathlib import Path

HERE = Path(__file__).parent
COLS = ["user_id", "ts", "event", "amount", "channel", "ref_user_id", "rating", "coupon", "content_id", "order_id"]
GOOD_EVENTS = [
    "follow",
    "add_contact",
    "join_group",
    "member_join",
    "message_sent",
    "message_open",
    "click",
    "visit",
    "like",
    "coupon_claim",
    "share",
    "mute",
    "subscribe",
]

BAD_ROWS = [  # one per rule, in the validator's order
    {"user_id": "", "ts": "2026-03-01T10:00:00Z", "event": "visit"},
    {"user_id": "u9001", "ts": "", "event": "visit"},
    {"user_id": "u9002", "ts": "yesterday at noon", "event": "visit"},
    {"user_id": "u9003", "ts": "2026-03-01 10:00:00", "event": ""},
    {"user_id": "u9004", "ts": "2026-03-01 10:00:00", "event": "teleport"},
    {"user_id": "u9005", "ts": "2026-03-01 10:00:00", "event": "purchase", "amount": "twelve", "order_id": "o9005"},
    {"user_id": "u9006", "ts": "2026-03-01 10:00:00", "event": "purchase", "order_id": "o9006"},
    {"user_id": "u9007", "ts": "2026-03-01 10:00:00", "event": "refund", "amount": "-5", "order_id": "o9007"},
    {"user_id": "u9008", "ts": "2026-03-01 10:00:00", "event": "review", "rating": "4.5"},
    {"user_id": "u9009", "ts": "2026-03-01 10:00:00", "event": "review"},
    {"user_id": "u9010", "ts": "2026-03-01 10:00:00", "event": "review", "rating": "9"},
    {"user_id": "u9011", "ts": "2026-03-01 10:00:00", "event": "purchase", "amount": "10", "coupon": "maybe"},
    {"user_id": "u9012", "ts": "2026-03-01 10:00:00", "event": "referral_purchase", "amount": "88"},
]


def _ts(rng: random.Random, i: int) -> str:
    sec = 1767225600 + rng.randrange(0, 120 * 86400)  # 2026-01-01 .. +120 days
    fmt = i % 4
    if fmt == 0:
        return str(sec)
    if fmt == 1:
        return str(sec * 1000)
    import datetime as dt

    t = dt.datetime.fromtimestamp(sec, dt.UTC)
    if fmt == 2:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (t + dt.timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%S+08:00")


def good_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        uid = f"{rng.randrange(0, 300):05d}"  # leading zeros must survive
        kind = rng.random()
        if kind < 0.15:
            oid = f"o{i}"
            rows.append(
                {
                    "user_id": uid,
                    "ts": _ts(rng, i),
                    "event": rng.choice(["purchase", "order_paid"]),
                    "amount": f"{rng.uniform(20, 300):.2f}",
                    "coupon": rng.choice(["true", "false"]),
                    "order_id": oid,
                    "channel": "mini_program",
                }
            )
        elif kind < 0.18:
            rows.append({"user_id": uid, "ts": _ts(rng, i), "event": "review", "rating": str(rng.randint(1, 5))})
        elif kind < 0.20:
            rows.append(
                {
                    "user_id": uid,
                    "ts": _ts(rng, i),
                    "event": "referral_purchase",
                    "amount": f"{rng.uniform(20, 300):.2f}",
                    "ref_user_id": f"{rng.randrange(300, 400):05d}",
                }
            )
        else:
            rows.append(
                {
                    "user_id": uid,
                    "ts": _ts(rng, i),
                    "event": rng.choice(GOOD_EVENTS),
                    "channel": rng.choice(["wecom", "group", "official_account", ""]),
                }
            )
    return rows


def write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLS)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in COLS})


if __name__ == "__main__":
    good = good_rows(2000, seed=7)
    messy = good[:1000] + BAD_ROWS + good[1000:] + good[10:15]  # 5 exact duplicates
    write(HERE / "messy_events.csv", messy)
    write(HERE / "too_messy.csv", good_rows(40, seed=8) + BAD_ROWS)
