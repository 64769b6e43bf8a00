"""Registry: aliases, the champion gate, promote / rollback (API and CLI), and fast model loading."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from training_world import FEATURES, make_table, small_cfg

from siyu.errors import SiyuError
from training import model_registry
from training.train import train_table

NAMES = [f.name for f in FEATURES]


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """v1: a real model; v2: a one-split stump trained on the same data (must lose the gate)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    # Enough users that LightGBM beats both baselines on churn beyond the bootstrap noise (v1 serves it).
    table, cutoffs = make_table(1500, 3, seed=11)
    lgbm = ("lightgbm", "logistic", "rule")  # no blend: these tests read the booster itself
    cfg = small_cfg(uri, candidates=lgbm)
    first = train_table(table, cutoffs, cfg, FEATURES, experiment="r")
    assert first.labels["churn"].scorer == "lightgbm", first.labels["churn"].message
    weak = small_cfg(uri, num_boost_round=1, candidates=("lightgbm",), lgbm_params={"num_leaves": 2})
    second = train_table(table, cutoffs, weak, FEATURES, experiment="r")
    return cfg, table, cutoffs, first, second


def test_first_version_becomes_champion(two_versions):
    _, _, _, first, _ = two_versions
    g = first.labels["churn"].gate
    assert first.labels["churn"].version == 1 and g.promoted and g.reason.startswith("no champion yet")


def test_worse_challenger_does_not_replace_champion(two_versions):
    cfg, _, _, first, second = two_versions
    r2, r1 = second.labels["churn"], first.labels["churn"]
    g = r2.gate
    assert r2.version == 2 and not g.promoted
    # both numbers are on the same validation rows: the champion's is v1's own validation AUC
    served = r2.metrics if r2.scorer == "lightgbm" else r2.baselines[r2.scorer]  # the stump may lose to a baseline
    assert g.champion == pytest.approx(r1.metrics["roc_auc"]) and g.challenger == pytest.approx(served["roc_auc"])
    assert g.challenger < g.champion and g.champion_version == 1
    assert model_registry.resolve_alias(cfg, "churn", "champion") == 1
    assert model_registry.resolve_alias(cfg, "churn", "challenger") == 2
    model_registry.use_tracking(cfg)
    run = mlflow.get_run(r2.run_id)
    assert run.data.tags["siyu.gate"] == "kept_champion" and "champion v1" in run.data.tags["siyu.gate_reason"]
    assert run.data.metrics["gate_champion_roc_auc"] == pytest.approx(g.champion)


def test_load_model_scores_like_the_pyfunc(two_versions):
    cfg, table, cutoffs, first, _ = two_versions
    m = model_registry.load_model(cfg, "churn")
    assert (m.label, m.name, m.version, m.feature_names, m.kind) == ("churn", "siyu-churn", 1, NAMES, "lightgbm")
    X = table.loc[table.cutoff == cutoffs[-1], NAMES].astype(float).to_numpy()[:50]
    p = m.predict_proba(X)
    assert p.shape == (50,) and np.all((p >= 0) & (p <= 1))
    model_registry.use_tracking(cfg)
    pyfunc = mlflow.pyfunc.load_model("models:/siyu-churn@champion")
    np.testing.assert_allclose(pyfunc.predict(pd.DataFrame(X, columns=NAMES)), p)
    c = m.contributions(X)
    assert c.shape == (50, len(NAMES) + 1)
    np.testing.assert_allclose(c.sum(axis=1), m.booster.predict(X, raw_score=True), rtol=1e-6, atol=1e-9)


def test_logged_model_is_code_plus_plain_files(two_versions, tmp_path):
    """The registered version holds the model code and a plain folder: no pickle anywhere."""
    cfg = two_versions[0]
    model_registry.use_tracking(cfg)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/siyu-churn/1", dst_path=str(tmp_path)))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"artifacts/scorer/scorer.json", "artifacts/scorer/booster.txt", "mlflow_scorer.py"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))], files
    spec = json.loads((local / "artifacts/scorer/scorer.json").read_text())
    assert (spec["kind"], spec["label"], spec["feature_names"]) == ("lightgbm", "churn", NAMES)


def test_logging_emits_no_cloudpickle_warning(tmp_path):
    """MLflow warns when `python_model` is a pickled object; a model logged from code must not trigger it."""
    import lightgbm as lgb

    from training.calibrate import Calibrator

    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1}, lgb.Dataset(X, (X.a > 0).astype(int)), 5
    )
    cfg = small_cfg(f"sqlite:///{tmp_path / 'm.db'}")
    model_registry.use_experiment(cfg, "pickle-free")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    mlogger = logging.getLogger("mlflow")
    mlogger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught, mlflow.start_run():
            warnings.simplefilter("always")
            v = model_registry.log_model(booster, Calibrator("platt", {"a": 1.0, "b": 0.0}), "churn", "toy", X[:5])
    finally:
        mlogger.removeHandler(handler)
    texts = seen + [str(w.message) for w in caught]
    assert v == 1 and not [t for t in texts if "cloudpickle" in t.lower()], texts


def test_pyfunc_loads_without_unpickling_in_a_fresh_process(two_versions, tmp_path):
    """`mlflow.pyfunc.load_model` of a pinned version works with pickle deserialisation disallowed."""
    cfg, table, cutoffs, _, _ = two_versions
    X = table.loc[table.cutoff == cutoffs[-1], NAMES].astype(float)[:40]
    X.to_parquet(tmp_path / "x.parquet")
    code = (
        "import sys, json, mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model('models:/siyu-promotion/1')\n"
        "print(json.dumps(list(map(float, m.predict(pd.read_parquet(sys.argv[1]))))))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.tracking_uri(), "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.parquet")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    expect = model_registry.load_version(cfg, "promotion", 1).predict_proba(X.to_numpy())
    np.testing.assert_allclose(json.loads(out.stdout.strip().splitlines()[-1]), expect, rtol=0, atol=1e-12)


def test_mlflow_models_serve_answers_like_serving(two_versions, tmp_path):
    """`mlflow models serve` of a pinned version, pickle disallowed, returns the serving probabilities."""
    import socket
    import time

    import httpx

    cfg, table, cutoffs, _, _ = two_versions
    # JSON has no NaN: missing values go through the parquet test above; here they are filled.
    X = table.loc[table.cutoff == cutoffs[-1], NAMES].astype(float)[:30].fillna(0.0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.tracking_uri(), "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")  # mlflow runs `uvicorn` from PATH
    mlflow_bin = str(Path(bin_dir) / "mlflow")
    argv = [mlflow_bin, "models", "serve", "-m", "models:/siyu-churn/1", "--env-manager", "local"]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url, deadline, answer = f"http://127.0.0.1:{port}", time.monotonic() + 120, None
        while answer is None:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                r = httpx.post(f"{url}/invocations", json={"dataframe_split": X.to_dict(orient="split")}, timeout=10)
                answer = r.json()["predictions"] if r.status_code == 200 else None
            except httpx.TransportError:
                time.sleep(0.5)
        expect = model_registry.load_version(cfg, "churn", 1).predict_proba(X.to_numpy())
        np.testing.assert_allclose(answer, expect, rtol=0, atol=1e-12)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        log.close()


def test_model_kinds_dispatch_through_one_table(tmp_path):
    """A new kind plugs in with one loader; unknown kinds and old layouts are handled."""
    from training import scorer_files as sf
    from training.calibrate import Calibrator

    @sf.kind("constant-test")
    def _load(folder, spec, name, version):
        return (spec["value"], name, version)

    try:
        sf.write_spec(tmp_path / "c", "constant-test", "koc", "m", ["a"], value=0.25)
        assert sf.load_dir(tmp_path / "c", version=3) == (0.25, "m", 3)
    finally:
        sf.KINDS.pop("constant-test")
    with pytest.raises(ValueError, match="unknown model kind 'constant-test'"):
        sf.load_dir(tmp_path / "c")
    # a version logged before scorer.json: meta.json + calibrator.json + booster.txt
    import lightgbm as lgb

    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 2))
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, (X[:, 0] > 0).astype(int)), 3)
    old = tmp_path / "old"
    old.mkdir()
    booster.save_model(str(old / "booster.txt"))
    (old / "calibrator.json").write_text(json.dumps(Calibrator("none").to_dict()))
    (old / "meta.json").write_text(json.dumps({"label": "churn", "name": "x", "feature_names": ["a", "b"]}))
    m = sf.load_dir(old, version=2)
    assert (m.kind, m.name, m.version, m.feature_names) == ("lightgbm", "x", 2, ["a", "b"])
    np.testing.assert_allclose(m.predict_proba(X), booster.predict(X))


def test_promote_and_rollback(two_versions):
    cfg = two_versions[0]
    assert model_registry.resolve_alias(cfg, "churn", "champion") == 1  # the gate kept v1
    assert model_registry.promote(cfg, "churn", 2) == 1
    assert model_registry.resolve_alias(cfg, "churn", "champion") == 2
    assert model_registry.rollback(cfg, "churn") == 1
    assert model_registry.resolve_alias(cfg, "churn", "champion") == 1
    with pytest.raises(SiyuError, match="no earlier champion"):
        model_registry.rollback(cfg, "churn")
    with pytest.raises(SiyuError, match="no version 7"):
        model_registry.promote(cfg, "koc", 7)
    with pytest.raises(SiyuError, match="alias 'staging'"):
        model_registry.resolve_alias(cfg, "koc", "staging")
    with pytest.raises(SiyuError, match="unknown label"):
        model_registry.resolve_alias(cfg, "nps")  # ("ltv" is a label now: issue 16)


def _cli(monkeypatch, capsys, *argv) -> tuple[int, str]:
    from app.cli import main

    monkeypatch.setattr(sys, "argv", ["siyu", *argv])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_cli_promote_rollback(two_versions, monkeypatch, capsys, tmp_path):
    cfg = two_versions[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.mlflow.tracking_uri)  # the CLI reads the default config
    model_registry.promote(cfg, "promotion", 1)  # whatever the gate decided, start from v1
    code, out = _cli(monkeypatch, capsys, "promote", "promotion", "--version", "2")
    assert code == 0 and "champion v1 -> v2" in out
    code, out = _cli(monkeypatch, capsys, "rollback", "promotion")
    assert code == 0 and "champion is now v1" in out
    code, out = _cli(monkeypatch, capsys, "promote", "promotion", "--version", "9")
    assert code == 2 and "no version 9" in out and "Traceback" not in out


def test_tracking_follows_each_config(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI; siyu must not let that pin later configs."""
    a, b = small_cfg(f"sqlite:///{tmp_path / 'a.db'}"), small_cfg(f"sqlite:///{tmp_path / 'b.db'}")
    assert model_registry.use_tracking(a) == a.mlflow.tracking_uri
    assert (
        model_registry.use_tracking(b) == b.mlflow.tracking_uri and mlflow.get_tracking_uri() == b.mlflow.tracking_uri
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # a user's server still wins
    assert model_registry.use_tracking(a) == "http://127.0.0.1:9"


def test_local_store_keeps_artifacts_beside_the_store_not_in_cwd(cfg, tmp_path, monkeypatch):
    import mlflow

    from training.model_registry import use_experiment

    monkeypatch.chdir(tmp_path)
    use_experiment(cfg, "where-do-artifacts-go")
    loc = mlflow.get_experiment_by_name("where-do-artifacts-go").artifact_location
    assert loc.startswith((cfg.home() / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()


def test_scorer_serves_a_model_without_a_booster():
    """A non-LightGBM kind (only predict_proba and contributions) scores and explains through the Scorer."""
    from serving.scoring import Scorer

    class Linear:
        label, name, version, feature_names = "churn", "lin", 4, ["a", "b", "c"]
        w = np.array([0.5, -2.0, 1.0])

        def contributions(self, X):
            return np.column_stack([X * self.w, np.full(len(X), -1.0)])

        def predict_proba(self, X):
            return 1 / (1 + np.exp(-self.contributions(X).sum(axis=1)))

    s = Scorer({"churn": Linear()}, ["c", "b", "a", "z"])
    X = np.array([[1.0, 0.0, 2.0, 9.0], [0.0, 1.0, 0.0, 9.0]])
    out = s.score(X, {"churn": np.array([True, True])})
    m = Linear()
    np.testing.assert_allclose(out.proba["churn"], m.predict_proba(X[:, [2, 1, 0]]))
    assert out.reason_idx["churn"][1, 0] == 1 and out.reason_contrib["churn"][1, 0] == -2.0  # "b" in scorer columns
    assert s.versions["churn"] == 4
