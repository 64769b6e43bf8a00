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


def test_a_brand_file_says_only_what_differs(tmp_path, cfg):
    c = load_config(write(tmp_path, "windows:\n  horizon_days: 14\ntraining:\n  lgbm_params: {num_leaves: 63}\n"))
    assert c.windows.horizon_days == 14
    assert c.windows.period_days == cfg.windows.period_days  # a sibling key keeps its default
    assert c.training.lgbm_params["num_leaves"] == 63
    assert c.training.lgbm_params["learning_rate"] == cfg.training.lgbm_params["learning_rate"]
    assert c.simulation == cfg.simulation and c.source == (tmp_path / "c.yaml").resolve()


def test_every_setting_comes_from_the_defaults_file(monkeypatch):
    """The models declare no defaults: a key the YAML lacks is an error naming it."""
    from siyu import config

    raw = dict(config._defaults())
    raw["windows"] = {k: v for k, v in raw["windows"].items() if k != "n_cutoffs"}
    monkeypatch.setattr(config, "_defaults", lambda: raw)
    with pytest.raises(SiyuError, match=r"key 'windows.n_cutoffs': missing value"):
        load_config()
    sections = [f.annotation for n, f in config.Config.model_fields.items() if n != "source"]
    for model in [config.Config, *sections]:
        assert isinstance(model, type) and issubclass(model, config.BaseModel), model
        assert not [n for n, f in model.model_fields.items() if not f.is_required() and n != "source"], model


def test_environment_overrides_resolve_after_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SIYU_RELOAD_SECONDS", "2.5")
    monkeypatch.setenv("SIYU_ACCESS_LOG", "1")
    monkeypatch.setenv("SIYU_SPARK_PARTITIONS", "")  # empty counts as unset
    monkeypatch.setenv("SIYU_DUCKDB_MEMORY_LIMIT", "3GB")
    c = load_config(write(tmp_path, "serving:\n  reload_seconds: 5\nruntime:\n  spark_partitions: 3\n"))
    assert c.serving.reload_seconds == 2.5 and c.serving.access_log is True
    assert c.runtime.spark_partitions == 3 and c.runtime.duckdb_memory_limit == "3GB"
    monkeypatch.setenv("SIYU_RELOAD_SECONDS", "soon")
    with pytest.raises(SiyuError, match=r"environment SIYU_RELOAD_SECONDS: key 'serving.reload_seconds'"):
        load_config()


def test_siyu_config_names_the_file_when_no_path_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("SIYU_CONFIG", str(write(tmp_path, "labels:\n  churn_mode: inactive\n")))
    assert load_config().labels.churn_mode == "inactive"


def test_the_token_is_a_secret_from_the_environment_only(tmp_path, monkeypatch):
    monkeypatch.delenv("SIYU_API_TOKEN", raising=False)
    assert not load_config().serving.auth_required
    monkeypatch.setenv("SIYU_API_TOKEN", "")
    assert not load_config().serving.auth_required
    monkeypatch.setenv("SIYU_API_TOKEN", "s3cret")
    c = load_config()
    assert c.serving.auth_required and c.serving.api_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(c) and "api_token" not in c.model_dump()["serving"]
    with pytest.raises(SiyuError, match=r"key 'serving.api_token': a secret, set it in SIYU_API_TOKEN"):
        load_config(write(tmp_path, "serving:\n  api_token: abc\n"))


def test_feature_catalog_reads_its_windows_from_the_config(cfg):
    from features.catalog import FEATURES, features_of

    assert [f.name for f in FEATURES] == [f.name for f in features_of(cfg)]
    assert any(f.name.endswith(f"_{max(cfg.windows.feature_windows)}d") for f in FEATURES)


def test_the_defaults_ship_inside_the_package():
    """siyu/defaults.yaml is mlproject.yaml and package data: a wheel carries it (no lookup via __file__)."""
    import tomllib
    from importlib import resources
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    assert resources.files("siyu").joinpath("defaults.yaml").read_text() == (root / "mlproject.yaml").read_text()
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert "defaults.yaml" in pyproject["tool"]["setuptools"]["package-data"]["siyu"]
