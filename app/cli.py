"""The `siyu` command line. Commands are thin: they parse options, call a plain
function that takes paths and config, and print what it returns."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from siyu.config import Config, load_config
from siyu.errors import SiyuError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}

ConfigOpt = typer.Option(
    None, "--config", "-c", help="config file, only what differs from the defaults (default: $SIYU_CONFIG)"
)


def cfg_from(path: Path | None) -> Config:
    """Load the config named on the command line (or the default)."""
    return load_config(path)


StoreOpt = typer.Option(None, "--store", help="an event store (`siyu ingest`) instead of EVENTS: reads its day facts")


def events_or_store(events: Path | None, store: Path | None) -> Path:
    """The log to read: EVENTS or --store DIR, exactly one of them."""
    if (events is None) == (store is None):
        raise SiyuError("give either EVENTS or --store DIR (one of them)")
    if store is not None:
        from events.store import read_manifest

        read_manifest(store)  # a clear error when it is no store
    return events if events is not None else store


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show tracebacks on errors")) -> None:
    """siyu: private-domain relationship predictions."""
    _state["debug"] = debug


@app.command()
def validate(
    events: Path = typer.Argument(..., help="CSV file, Parquet file, or folder of Parquet parts"),
    out: Path = typer.Option(Path("out/validate"), "--out", help="folder for accepted events and quarantine"),
    config: Path | None = ConfigOpt,
) -> None:
    """Check an event log against the contract; write accepted rows and the quarantine."""
    from events.validate import print_report, validate_file

    report = validate_file(events, cfg_from(config), out)
    print_report(report, console)
    report.raise_if_over_threshold()


@app.command()
def train(
    events: Path | None = typer.Argument(
        None, help="event log (CSV, Parquet or folder); oracle.parquet beside it is used"
    ),
    store: Path | None = StoreOpt,
    config: Path | None = ConfigOpt,
    experiment: str | None = typer.Option(None, "--experiment", help="MLflow experiment (default: config)"),
) -> None:
    """Train the churn, promotion and KOC models; log to MLflow; register and gate.

    Exits non-zero (2) when no label could be trained, so a nightly job does not look green.
    """
    from training.summary import print_train_result
    from training.train import train_all

    result = train_all(events_or_store(events, store), cfg_from(config), experiment)
    print_train_result(result, console)
    if not result.trained_any():
        raise SiyuError(
            "no label could be trained: " + "; ".join(f"{r.label}: {r.message}" for r in result.labels.values())
        )


@app.command()
def promote(
    label: str = typer.Argument(..., help="churn | promotion | koc"),
    version: int = typer.Option(..., "--version", help="registered version to make champion"),
    config: Path | None = ConfigOpt,
) -> None:
    """Make a registered model version the champion by hand."""
    from training.model_registry import model_name
    from training.model_registry import promote as do_promote

    cfg = cfg_from(config)
    before = do_promote(cfg, label, version)
    console.print(f"{model_name(cfg, label)}: champion v{before} -> v{version}", highlight=False)


@app.command()
def rollback(
    label: str = typer.Argument(..., help="churn | promotion | koc"),
    config: Path | None = ConfigOpt,
) -> None:
    """Move the champion alias back to the version that held it before."""
    from training.model_registry import model_name
    from training.model_registry import rollback as do_rollback

    cfg = cfg_from(config)
    version = do_rollback(cfg, label)
    console.print(f"{model_name(cfg, label)}: champion is now v{version}", highlight=False)


@app.command()
def simulate(
    users: int = typer.Option(20000, "--users", help="users arriving by public traffic and campaigns"),
    days: int = typer.Option(365, "--days", help="length of the world in days"),
    start: str | None = typer.Option(None, "--start", help="first day, YYYY-MM-DD (default 2025-01-01)"),
    seed: int = typer.Option(42, "--seed", help="random seed: the same seed gives identical events"),
    oracle_cutoff: list[str] | None = typer.Option(
        None, "--oracle-cutoff", help="oracle cutoff date YYYY-MM-DD (repeatable; default: start + days - H)"
    ),
    replicas: int | None = typer.Option(None, "--replicas", help="oracle re-simulations per user; 0: no oracle"),
    out: Path = typer.Option(Path("out/world"), "--out", help="folder for events, users and oracle Parquet files"),
    config: Path | None = ConfigOpt,
) -> None:
    """Simulate the built-in private-domain world; write events, users and the oracle."""
    from simulation.report import print_summary
    from simulation.simulator import parse_day, simulate_world

    cutoffs = [parse_day(c, "--oracle-cutoff") for c in oracle_cutoff] if oracle_cutoff else None
    summary = simulate_world(
        cfg_from(config), users, days, parse_day(start, "--start") if start else None, seed, out, cutoffs, replicas
    )
    print_summary(summary, console)


EngineOpt = typer.Option("duckdb", "--engine", help="duckdb (default, embedded) or spark")


def _table_command(
    kind: str,
    events: Path | None,
    when: str,
    what: str,
    out: Path | None,
    config: Path | None,
    engine: str,
    store: Path | None = None,
) -> None:
    from features.export import build_table, parse_instant, summary_lines, write_parquet

    cfg = cfg_from(config)
    t = parse_instant(when, what, cfg.events.time_zone)
    df = build_table(kind, events_or_store(events, store), t, cfg, engine)
    console.print(f"{kind} at {t:%Y-%m-%d %H:%M} ({engine}):", highlight=False)
    for line in summary_lines(kind, df):
        console.print(f"  {line}", highlight=False)
    if out:
        write_parquet(df, out)
        console.print(f"wrote {out}", highlight=False)


@app.command()
def labels(
    events: Path | None = typer.Argument(None, help="event log: CSV, Parquet, or folder of Parquet parts"),
    cutoff: str = typer.Option(..., "--cutoff", help="cutoff T, YYYY-MM-DD (00:00 brand-local) or ISO date-time"),
    out: Path | None = typer.Option(None, "--out", help="write the table to this Parquet file"),
    config: Path | None = ConfigOpt,
    engine: str = EngineOpt,
    store: Path | None = StoreOpt,
) -> None:
    """Tier at T and T+H, populations and churn / promotion / KOC labels per user known at T."""
    _table_command("labels", events, cutoff, "--cutoff", out, config, engine, store)


@app.command()
def features(
    events: Path | None = typer.Argument(None, help="event log: CSV, Parquet, or folder of Parquet parts"),
    asof: str = typer.Option(..., "--asof", help="as-of instant, YYYY-MM-DD (00:00 brand-local) or ISO date-time"),
    out: Path | None = typer.Option(None, "--out", help="write the table to this Parquet file"),
    config: Path | None = ConfigOpt,
    engine: str = EngineOpt,
    store: Path | None = StoreOpt,
) -> None:
    """One feature row per user known at the as-of instant (the registry's features)."""
    _table_command("features", events, asof, "--asof", out, config, engine, store)


@app.command()
def score(
    events: Path | None = typer.Argument(None, help="event log: CSV, Parquet, or folder of Parquet parts"),
    asof: str = typer.Option(..., "--asof", help="cutoff, YYYY-MM-DD (00:00 brand-local) or ISO date-time"),
    out: Path = typer.Option(..., "--out", help="the scores snapshot to write (Parquet, atomically)"),
    engine: str = EngineOpt,
    store: Path | None = StoreOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Batch-score every user with the champion models; the file is the snapshot the API serves."""
    from serving.batch import print_summary, score_pool

    log = events_or_store(events, store)
    print_summary(score_pool(log, asof, out, cfg_from(config), engine=engine), console)


@app.command()
def ingest(
    events: Path = typer.Argument(..., help="one batch of events (a day's export): CSV, Parquet or folder"),
    store: Path = typer.Option(..., "--store", help="the event store folder (created by the first ingest)"),
    config: Path | None = ConfigOpt,
) -> None:
    """Validate a batch and append its new rows and their day facts to the event store (idempotent)."""
    from features.ingest import ingest_file, print_ingest

    with console.status("ingesting") as status:
        summary = ingest_file(events, store, cfg_from(config), progress=lambda m: status.update(m))
    print_ingest(summary, console)


@app.command()
def monitor(
    old: Path = typer.Argument(..., help="the earlier scores snapshot (the reference; graded when --events covers it)"),
    new: Path = typer.Argument(..., help="the later scores snapshot"),
    events: str | None = typer.Option(None, "--events", help="event log covering the old snapshot's horizon"),
    out: Path = typer.Option(Path("out/monitor"), "--out", help="folder for monitor.json, plots and monitor.html"),
    fail_on: str = typer.Option("never", "--fail-on", help="exit 3 when the status reaches: never | watch | alert"),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="log the run to MLflow"),
    config: Path | None = ConfigOpt,
) -> None:
    """Drift between two snapshots, the old one's realised and expected outcomes; one report."""
    from monitoring.report import print_summary
    from monitoring.run import FAIL_ON, monitor

    if fail_on not in FAIL_ON:
        raise SiyuError(f"--fail-on must be one of {', '.join(FAIL_ON)}, not {fail_on!r}")
    log = Path(events) if events else None  # the MLflow entry point passes '' for none
    result = monitor(old, new, cfg_from(config), log, out, log_mlflow=mlflow)
    print_summary(result, console)
    if result.fails(fail_on):
        err_console.print(f"monitor status {result.status} reaches --fail-on {fail_on}", highlight=False)
        sys.exit(3)  # a scheduler stops the nightly run here


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="interface to bind"),
    port: int = typer.Option(3000, "--port", help="TCP port"),
    scores: Path | None = typer.Option(None, "--scores", help="snapshot to serve (default: the latest `siyu score`)"),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="worker processes (default 1; 2+ keep answering when one dies)"
    ),
    no_auth: bool = typer.Option(
        False, "--no-auth", help="serve beyond 127.0.0.1 without SIYU_API_TOKEN (refused otherwise)"
    ),
    config: Path | None = ConfigOpt,
) -> None:
    """Start the prediction API (BentoML) on the champion models and a scores snapshot."""
    from serving.launch import exec_serve, serve_command

    argv, env = serve_command(cfg_from(config), host, port, scores, workers, no_auth)
    console.print(f"serving {env['SIYU_SCORES']} on http://{host}:{port} (docs: /docs)", highlight=False)
    exec_serve(argv, env)


@app.command()
def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="folder for the world, scores and logs"),
    users: int = typer.Option(20_000, "--users", min=100, help="simulated users"),
    days: int = typer.Option(365, "--days", min=120, help="simulated days"),
    seed: int = typer.Option(42, "--seed"),
    port: int = typer.Option(3000, "--port", help="preferred API port on 127.0.0.1"),
    keep_serving: bool = typer.Option(False, "--keep-serving", help="leave the API running at the end"),
    config: Path | None = ConfigOpt,
) -> None:
    """The main job: simulate, validate, train, score, serve, and send one real request."""
    from app.demo import run_demo

    run_demo(
        cfg_from(config), out, users=users, days=days, seed=seed, port=port, keep_serving=keep_serving, console=console
    )


def main() -> None:
    """Entry point: run the app; user errors become one line and a non-zero exit."""
    debug = "--debug" in sys.argv
    try:
        app(standalone_mode=False)
    except SiyuError as e:
        if debug:
            raise
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.TyperException as e:  # usage errors: click's own message, exit 2
        e.show()
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 - last line of defence: never a raw traceback
        if debug:
            raise
        err_console.print(
            f"[red]error:[/red] unexpected {type(e).__name__}: {e} (run with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
