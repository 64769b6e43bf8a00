"""LightGBM's single-row C API for the API's one-user requests: leaf indices or predictions without `Booster.predict`.

`Booster.predict` spends ~80 µs per call building a predictor and parsing parameters before a
one-row prediction of a few µs, and on more than one thread OpenMP's start-up and spin-wait
cost more than the row. `LGBM_BoosterPredictForMatSingleRowFast` does the set-up once per
booster. Each fast handle is checked against `Booster.predict` on probe rows when it is made
and is not used when it differs.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

SMALL_N = 16  # up to this many rows go one by one through the single-row API
PREDICT_NORMAL, PREDICT_LEAF_INDEX = 0, 2  # LightGBM C API constants (c_api.h)
_DTYPE_FLOAT64 = 1


class SingleRow:
    """One booster's fast single-row predictor: `PREDICT_NORMAL` (one value per row) or leaf indices.

    One handle serves every thread under a lock (calls are µs long, the API's state is shared).
    """

    def __init__(self, booster, n_features: int, predict_type: int, out_len: int) -> None:
        from lightgbm.basic import _LIB, _safe_call

        self._lib, self._check, self._booster = _LIB, _safe_call, booster  # the booster must outlive the handle
        self.n_features, self.out_len = n_features, out_len
        self._handle = ctypes.c_void_p()
        self._check(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(predict_type),
                ctypes.c_int(0),
                ctypes.c_int(booster.best_iteration),
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(n_features),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(self._handle),
            )
        )
        self._out = np.empty(out_len, dtype=np.float64)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_len = ctypes.c_int64()
        self._lock = threading.Lock()

    @classmethod
    def create(cls, booster, n_features: int, predict_type: int, out_len: int) -> SingleRow | None:
        """The fast predictor when it reproduces `Booster.predict` on probe rows, else None."""
        try:
            fast = cls(booster, n_features, predict_type, out_len)
        except Exception:  # noqa: BLE001 - an unusual model or build: keep the always-right path
            return None
        rng = np.random.default_rng(0)
        probe = rng.normal(scale=3.0, size=(8, n_features)) * rng.choice([1, 10, 100], size=(8, 1))
        probe[::3, ::2] = np.nan
        leaf = predict_type == PREDICT_LEAF_INDEX
        ref = np.asarray(booster.predict(probe, pred_leaf=leaf, num_threads=1), dtype=np.float64)
        ref = ref.reshape(len(probe), -1)
        got = fast(probe)
        if ref.shape != (len(probe), out_len):
            return None
        return fast if (np.array_equal(got, ref) if leaf else np.allclose(got, ref, rtol=1e-12, atol=0)) else None

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """n x out_len outputs of the rows of X (n x n_features, float64)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {X.shape}")
        out = np.empty((len(X), self.out_len), dtype=np.float64)
        base, step = X.__array_interface__["data"][0], X.strides[0]  # X.ctypes costs more than the prediction
        with self._lock:
            for i in range(len(X)):
                self._check(
                    self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                        self._handle, ctypes.c_void_p(base + i * step), ctypes.byref(self._out_len), self._out_ptr
                    )
                )
                out[i] = self._out
        return out

    def __del__(self) -> None:
        if getattr(self, "_handle", None) and self._handle.value:
            self._lib.LGBM_FastConfigFree(self._handle)


class NativeBooster:
    """A `Booster` stand-in whose `predict(X)` takes the single-row API for a few rows, one thread up to 5,000.

    Args:
        booster: a trained lightgbm.Booster with one output per row (binary or regression).
    """

    def __init__(self, booster) -> None:
        self.booster = booster
        self._single = SingleRow.create(booster, booster.num_feature(), PREDICT_NORMAL, 1)

    def __getstate__(self) -> dict:
        return {"booster": self.booster}  # the C handle does not pickle (Spark ships scorers to its workers)

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["booster"])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """What `booster.predict(X)` returns (one value per row)."""
        if self._single is not None and len(X) <= SMALL_N:
            return self._single(X)[:, 0]
        return self.booster.predict(X, num_threads=1 if len(X) < 5000 else 0)
