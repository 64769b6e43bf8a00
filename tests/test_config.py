"""Config: parsed once, typed, and a bad file is a one-line error naming the key."""

from __future__ import annotations

import pytest

from siyu.config import load_config
from siyu.errors import SiyuError


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_default_config_loads_and_ignores_mlflow_project_keys(cfg):
    assert cfg.windows.period_days == 90 and cfg.windows.horizon_days == 30
    assert cfg.mlflow.model_names["churn"] == "siyu-churn"
    assert cfg.events.mapping["order_paid"] == "purchase"


@pytest.mark.parametrize(
    "text,match",
    [
        ("tiers:\n  koc_min_referral: 2\n", r"key 'tiers.koc_min_referral': unknown key"),
        ("windows:\n  period_days: ninety\n", r"key 'windows.period_days': .*integer"),
        ("labels:\n  churn_mode: sometimes\n", r"key 'labels.churn_mode'"),
        ("quarantine:\n  max_fraction: 2\n", r"key 'quarantine.max_fraction'"),
        ("events:\n  mapping: {pay: buy}\n", r"key 'events.mapping': .*unknown canonical event"),
        ("bogus: 1\n", r"key 'bogus': unknown key"),
        ("windows: [1, 2\n", r"not valid YAML"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, text, match):
    with pytest.raises(SiyuError, match=match) as e:
        load_config(write(tmp_path, text))
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(SiyuError, match="config file not found"):
        load_config(tmp_path / "none.yaml")


def test_local_store_sits_beside_the_config_unless_env_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("SIYU_HOME", raising=False)
    c = load_config(write(tmp_path, "name: x\n"))
    assert c.tracking_uri() == f"sqlite:///{tmp_path / '.siyu' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert c.tracking_uri() == "http://127.0.0.1:5999"
