"""The /predict items as JSON text, written straight from the score arrays.

`Predictor.predict_rows` builds the answer as dicts (the schema's shape), which
`json.dumps` then walks again; for a 1,000-user request that is ~6,000 reason
dicts and most of the request's time. Here every fixed piece of JSON (keys,
feature names, sentence openings and endings) is escaped once at load, and a
request only formats numbers and joins strings. The output parses to exactly
the dicts `predict_rows` returns (a test checks it), in the same key order.
"""

from __future__ import annotations

import math
from json.encoder import encode_basestring_ascii as _q  # C-accelerated, what json.dumps uses

import numpy as np

from serving.scoring import ReasonFormatter, format_value
from siyu.contract import LABELS


def _num(x: float) -> str:
    """A float as json.dumps writes it; non-finite is an error there (allow_nan=False) and here."""
    if not math.isfinite(x):
        raise ValueError(f"out of range float value in the answer: {x!r}")
    return repr(x)


_LTV_VALUES = ("ltv", "ltv_own", "ltv_referral", "pct_ltv", "pct_ltv_own", "pct_ltv_referral")


def _advice_json(advice: dict[str, np.ndarray] | None, n: int) -> list[str]:
    """Per row: the advice fields as `,"key":value` JSON text (null where there is none)."""
    from serving.advice import FIELDS

    if advice is None:  # the caller renders no advice fields (Predictor always passes them)
        return [""] * n
    parts = []
    for f in FIELDS:
        v = advice[f]
        if f.startswith("push_"):
            parts.append([f',"{f}":' + ("null" if x != x else _num(float(x))) for x in v.tolist()])
        else:
            parts.append([f',"{f}":' + ("null" if x is None else _q(x)) for x in v.tolist()])
    return ["".join(p) for p in zip(*parts)] if parts and n else [""] * n


class JsonRenderer:
    """Pre-escaped JSON pieces of reasons, built once from a ReasonFormatter.

    Args:
        reasons: the formatter `predict_rows` uses (names, units, sentence parts).
    """

    def __init__(self, reasons: ReasonFormatter) -> None:
        self.units = reasons.units
        self.feature = ['{"feature":' + _q(name) + ',"value":' for name in reasons.names]
        self.sentence = [',"sentence":' + _q(pre)[:-1] for pre in reasons.prefix]  # open quote, no close
        self.direction = {True: ',"direction":"up","contribution":', False: ',"direction":"down","contribution":'}
        self.tail = {key: _q(tail)[1:] + "}" for key, tail in reasons.tail.items()}  # (label, up) -> end
        self._values: dict[tuple[int, float], tuple[str, str]] = {}

    def _reason(self, lab: str, j: int, value: float, contrib: float) -> str:
        up = contrib > 0
        # The reason's text around its contribution, cached per (feature, value): values repeat a lot
        # (counts, days). NaN and zero bypass the cache (NaN never equals itself; 0.0 == -0.0 but they
        # print apart).
        text = self._values.get((j, value)) if value else None
        if text is None:
            val = None if value != value else value
            # format_value writes digits, signs, ',', '.', 'e' and fixed ASCII words: nothing JSON must escape.
            text = (
                self.feature[j] + ("null" if val is None else _num(val)),
                self.sentence[j] + format_value(val, self.units[j]),
            )
            if value and val is not None:
                if len(self._values) > 200_000:
                    self._values.clear()
                self._values[(j, value)] = text
        return f"{text[0]}{self.direction[up]}{round(contrib, 4)!r}{text[1]}{self.tail[(lab, up)]}"

    def items(self, *args, **kwargs) -> str:
        """JSON array text of the answer items (the arguments of `item_texts`)."""
        return "[" + ",".join(self.item_texts(*args, **kwargs)) + "]"

    def item_texts(
        self,
        user_ids: list[str],
        rows: list[int],
        tier: np.ndarray,
        X: np.ndarray,
        cols: dict[str, tuple],
        ltv: dict[str, np.ndarray] | None = None,
        advice: dict[str, np.ndarray] | None = None,
    ) -> list[str]:
        """The JSON text of each answer item, in request order.

        Args:
            user_ids: the requested ids, in order.
            rows: per id its row in `tier`/`X`/`cols`, or -1 for an unknown user.
            tier, X: tier names and feature rows of the known users.
            cols: label -> (proba, percentile, bucket, reason idx, reason contrib) from `Predictor.columns`.
            ltv: `Predictor.ltv_columns` of the same rows (None: no LTV model, no `ltv` fields).
            advice: serving.advice.FIELDS -> value per known user (`Predictor.advice`); None: no such fields.
        """
        adv = _advice_json(advice, len(X))
        per_label = []
        for lab in LABELS:
            if lab not in cols:
                per_label.append(None)
                continue
            p, pct, bkt, idx, con = cols[lab]
            scored = ~np.isnan(p)
            if not (np.isfinite(pct[scored]).all() and np.isfinite(con[scored]).all()):
                raise ValueError(f"non-finite percentile or contribution in the {lab} answer")
            vals = X[np.arange(len(X))[:, None], np.maximum(idx, 0)]  # just the reasons' values, not all of X
            per_label.append((lab, p.tolist(), pct.tolist(), bkt.tolist(), idx.tolist(), con.tolist(), vals.tolist()))
        lv = self._ltv_texts(ltv, X) if ltv is not None else None
        out = []
        for u, r in zip(user_ids, rows):
            if r < 0:
                out.append('{"user_id":%s,"status":"unknown_user"}' % _q(u))
                continue
            ps, objs = [], []
            for spec in per_label:
                if spec is None or spec[1][r] != spec[1][r]:  # no model, or outside the population (NaN)
                    ps.append("null")
                    objs.append("null")
                    continue
                lab, p, pct, bkt, idx, con, vals = spec
                pr = repr(p[r])  # finite: NaN was handled above, percentiles/contributions checked
                reasons = ",".join(self._reason(lab, j, vals[r][k], con[r][k]) for k, j in enumerate(idx[r]) if j >= 0)
                objs.append(
                    '{"probability":%s,"percentile":%s,"bucket":%s,"reasons":[%s]}'
                    % (pr, repr(round(pct[r], 2)), "null" if bkt[r] is None else _q(bkt[r]), reasons)
                )
                ps.append(pr)
            out.append(
                '{"user_id":%s,"status":"ok","tier":%s,"p_churn":%s,"p_promotion":%s,"p_koc":%s,'
                '"churn":%s,"promotion":%s,"koc":%s'
                % (_q(u), _q(str(tier[r])), *ps, *objs)
                + (lv[r] if lv is not None else "")
                + adv[r]
                + "}"
            )
        return out

    def _ltv_texts(self, lv: dict, X: np.ndarray) -> list[str]:
        """`,"ltv":...` fields of every row, the text of `ltv_item` (columns turned into lists once)."""
        v = lambda x: "null" if x != x else _num(round(x, 2))  # noqa: E731 - NaN: missing
        values = [[v(x) for x in np.asarray(lv[c], dtype=float).tolist()] for c in _LTV_VALUES]
        segs = ["null" if s is None else _q(s) for s in lv["segment_ltv"].tolist()]
        idx = lv["reason_idx"]
        rx = X[np.arange(len(X))[:, None], np.maximum(idx, 0)].tolist()  # the reasons' values
        con, idx = lv["reason_contrib"].tolist(), idx.tolist()
        out = []
        for r in range(len(X)):
            reasons = ",".join(self._reason("ltv", j, rx[r][k], con[r][k]) for k, j in enumerate(idx[r]) if j >= 0)
            out.append(
                ',"ltv":%s,"ltv_own":%s,"ltv_referral":%s,"lifetime_value":{"percentile":%s,"percentile_own":%s,'
                '"percentile_referral":%s,"segment":%s,"reasons":[%s]}' % (*(c[r] for c in values), segs[r], reasons)
            )
        return out


def ltv_item(lv: dict, i: int, reasons: list[dict]) -> dict:
    """The `ltv` fields of row i of `Predictor.ltv_columns` as dicts (the shape `JsonRenderer._ltv_texts` writes)."""
    v = lambda x: None if x != x else round(float(x), 2)  # noqa: E731 - NaN: missing (no referral part)
    return {
        "ltv": v(lv["ltv"][i]),
        "ltv_own": v(lv["ltv_own"][i]),
        "ltv_referral": v(lv["ltv_referral"][i]),
        "lifetime_value": {
            "percentile": v(lv["pct_ltv"][i]),
            "percentile_own": v(lv["pct_ltv_own"][i]),
            "percentile_referral": v(lv["pct_ltv_referral"][i]),
            "segment": lv["segment_ltv"][i],
            "reasons": reasons,
        },
    }
