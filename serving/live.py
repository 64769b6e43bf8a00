"""The served models and snapshot of one API worker: loaded in the background, swapped when they change.

Settings are the config's `serving:` section (`scores`, `reload_seconds`, `load_wait_seconds`,
`load_retry_seconds`; SIYU_CONFIG names the file `siyu serve` passes on, and the SIYU_* overrides
in siyu/config.py apply). A failed load is logged and retried, so the worker keeps answering
its probes (not ready) instead of crash-looping.
"""

from __future__ import annotations

import gc
import logging
import os
import threading

from serving.metrics import flush_metrics

log = logging.getLogger("serving")


def _file_id(path) -> tuple:
    """What changes when a file is rewritten (`siyu score` replaces the snapshot atomically)."""
    st = os.stat(path)
    return os.path.realpath(path), st.st_ino, st.st_mtime_ns


class LivePredictor:
    """Holds `predictor` (None until the first load succeeds) and the threads that keep it current."""

    def __init__(self, settings) -> None:
        self.settings = settings  # the config's serving section, read once at start
        self.predictor = None
        self.load_error: str | None = None
        self._first_try = threading.Event()
        self._stop = threading.Event()

    def start(self) -> LivePredictor:
        """Start loading (and then watching) in the background; wait, bounded, for the first attempt.

        A worker takes connections only once the service's __init__ returns: waiting for the first
        load attempt means a replacement worker never answers 503 beside a ready sibling; bounded,
        so a failing load (MLflow down) still brings the worker up to answer probes and report not-ready.
        """
        threading.Thread(target=self._load_forever, name="siyu-load", daemon=True).start()
        threading.Thread(target=self._flush_forever, name="siyu-metrics", daemon=True).start()
        self._first_try.wait(self.settings.load_wait_seconds)
        return self

    def stop(self) -> None:
        """Stop the threads; hand the frozen objects back to the collector (no leak reports at exit)."""
        self._stop.set()
        gc.unfreeze()

    def _load_forever(self) -> None:
        """Load config, champions and snapshot; on failure log one line and retry (no crash loop)."""
        from serving.predictor import Predictor
        from siyu.config import load_config

        while self.predictor is None and not self._stop.is_set():
            try:
                cfg = load_config()
                self.predictor = Predictor.load(cfg, cfg.serving.scores)
                log.info(
                    "siyu ready: models %s, snapshot %s (%s users)",
                    self.predictor.versions,
                    self.predictor.snap.path,
                    len(self.predictor.snap.user_ids),
                )
                # Models, snapshot and the imported libraries are ~400k long-lived objects: a full
                # collection walks them all (~250 ms here, longer with a big snapshot) in the middle
                # of some request. Freezing moves them out of the collector's sight; new objects
                # are still collected.
                gc.collect()
                gc.freeze()
            except Exception as e:  # noqa: BLE001 - keep serving probes; /readyz reports not ready
                self.load_error = f"{type(e).__name__}: {e}"
                retry = self.settings.load_retry_seconds
                log.error("siyu not ready (retrying in %ss): %s", retry, self.load_error)
                self._first_try.set()
                self._stop.wait(retry)
        self._first_try.set()
        self._watch(self.settings.reload_seconds)

    def _watch(self, period: float) -> None:
        """Every `period` seconds (0 = never), reload when a champion alias or the latest snapshot moved.

        The new predictor is built beside the old one and swapped in by one reference
        assignment: every request runs wholly on the old or wholly on the new models.
        """
        from serving.predictor import Predictor
        from serving.snapshot import latest_snapshot
        from training.model_registry import champion_versions

        pinned = self.predictor.cfg.serving.scores
        while period > 0 and not self._stop.wait(period):
            cur = self.predictor
            served = {lab: v for lab, v in cur.versions.items() if v is not None}
            try:
                if champion_versions(cur.cfg, served) == served and _file_id(
                    pinned or latest_snapshot(cur.cfg)
                ) == _file_id(cur.snap.path):
                    continue
                new = Predictor.load(cur.cfg, pinned)
            except Exception as e:  # noqa: BLE001 - the registry or a file is away for now: keep serving
                log.error("siyu reload check failed (still serving %s): %s: %s", cur.versions, type(e).__name__, e)
                continue
            self.predictor = new
            log.info("siyu reloaded: models %s -> %s, snapshot %s", cur.versions, new.versions, new.snap.path)
            del cur
            gc.unfreeze()  # let the old predictor go, then freeze the new long-lived objects (see above)
            gc.collect()
            gc.freeze()

    def _flush_forever(self) -> None:
        """Batch the queued request counts into the metrics every second (and at every /metrics scrape)."""
        while not self._stop.wait(1.0):
            flush_metrics()
