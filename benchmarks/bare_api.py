"""The floor for the API benchmark: a bare ASGI app under uvicorn doing the same lookup + booster predict.

No framework, no validation, no reasons, percentiles or policy: parse the JSON body, find the
user's feature row in the snapshot, compute every number the answer gets from a model (each
champion's probability, a blend through its members; the LTV parts; the push effects), answer JSON.
Started by bench_api.py as `uvicorn --app-dir benchmarks bare_api:app` with
SIYU_SCORES / SIYU_HOME set like the real service.
"""

from __future__ import annotations

import json
import os

_STATE: dict = {}


def _load() -> None:
    from serving.pool import load_champions
    from serving.snapshot import load_snapshot
    from siyu.config import load_config

    cfg = load_config()
    snap = load_snapshot(os.environ["SIYU_SCORES"])
    models = load_champions(cfg)
    pos = {f: i for i, f in enumerate(snap.feature_names)}
    _STATE["cols"] = {lab: [pos[f] for f in m.feature_names] for lab, m in models.items()}
    # The least work that gives each champion's probability: a LightGBM booster on one thread
    # (OpenMP start-up dwarfs one row), a blend through its members' single-row leaves
    # (serving/blendpath.py, no reasons), any other candidate through its own closed form.
    _STATE["predict"] = {lab: _raw_predict(m) for lab, m in models.items()}
    _STATE["values"] = _value_models(cfg, snap)
    _STATE.update(snap=snap, models=models)


def _value_models(cfg, snap) -> list:
    """(name, row -> value) for the LTV parts and the push effects, when those champions exist."""
    from serving.advice import load_push_effect
    from serving.ltv_scores import load_ltv_scorer

    out = []
    ltv = load_ltv_scorer(cfg, snap.feature_names)
    if ltv is not None:
        out.append(("ltv", lambda row: float(ltv.score(row, reasons=False).ltv[0])))
    push = load_push_effect(cfg)  # its boosters behind the single-row API, as siyu serves them
    if push is not None:
        pos = {f: i for i, f in enumerate(snap.feature_names)}
        cols = [pos[f] for f in push.feature_names]
        out.append(("push_effect_churn", lambda row: float(push.effects(row[:, cols])["churn"][0])))
    return out


def _raw_predict(m):
    from serving.blendpath import BlendPath

    if m.kind == "lightgbm":
        return lambda row: m.booster.predict(row, num_threads=1)
    blend = BlendPath.create(m)
    return (lambda row: blend.predict(row, reasons=False)[0]) if blend is not None else m.booster.predict


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    if scope["path"] == "/readyz":  # loads on the first probe, like the service's background load
        if not _STATE:
            _load()
        out, status = b"ok", 200
    else:
        snap, out_items = _STATE["snap"], []
        for uid in json.loads(body)["user_ids"]:
            i = snap.index.get(uid)
            item = {"user_id": uid}
            if i is not None:
                for lab in _STATE["models"]:
                    item[f"p_{lab}"] = float(_STATE["predict"][lab](snap.X[i : i + 1, _STATE["cols"][lab]])[0])
                for name, value in _STATE["values"]:
                    item[name] = value(snap.X[i : i + 1])
            out_items.append(item)
        out, status = json.dumps({"predictions": out_items}).encode(), 200
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": out})
