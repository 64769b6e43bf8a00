"""Fast per-row feature contributions for LightGBM: decision-path (Saabas) attributions.

Along each tree's path, the change in node value at a split is credited to the
split's feature; summed over trees, plus the roots' values as bias, this is an
exact decomposition of the raw score, laid out like `pred_contrib`
(n x (features + 1), last column the bias). Each tree's leaves are turned into
attribution rows once at load, so explaining a row costs one `pred_leaf`
prediction (which also gives the score) and a sparse product.

Why not LightGBM's TreeSHAP (`pred_contrib=True`): measured here at 2-3 ms per
row for a 200-tree model, i.e. seconds for a 1,000-user request and most of an
hour for a 1M-user batch; the path attribution costs about as much as `predict`.
Config `scoring.reasons: shap` switches back to TreeSHAP where that is affordable.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import scipy.sparse as sp

SMALL_N = 16  # up to this many rows a dense gather beats building a sparse matrix (and rows go one by one)
_PREDICT_LEAF_INDEX, _DTYPE_FLOAT64 = 2, 1  # LightGBM C API constants (c_api.h)


class PathExplainer:
    """Decision-path contributions of one LightGBM booster.

    Args:
        booster: a trained lightgbm.Booster (binary objective, no linear trees).
    """

    def __init__(self, booster) -> None:
        self.booster = booster
        dump = booster.dump_model()
        self.n_features = int(dump["max_feature_idx"]) + 1
        rows, values, offsets, bias = [], [], [], 0.0
        for tree in dump["tree_info"]:
            offsets.append(len(rows))
            root = tree["tree_structure"]
            bias += _value(root)
            leaves: dict[int, tuple[np.ndarray, float]] = {}
            _walk(root, np.zeros(self.n_features + 1), leaves)
            for i in range(len(leaves)):
                rows.append(leaves[i][0])
                values.append(leaves[i][1])
        self.offsets = np.array(offsets, dtype=np.int64)
        # float32 halves the memory traffic of the product; contributions only rank reasons.
        self.M = np.vstack(rows).astype(np.float32)
        self.leaf_values = np.array(values, dtype=np.float64)
        self.bias = bias
        self._single = _SingleRowLeaves.create(booster, self.n_features, len(self.offsets))

    def leaves(self, X: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """n x trees global leaf indices (one LightGBM `pred_leaf` call, or the single-row API for a few rows)."""
        if self._single is not None and len(X) <= SMALL_N:
            return self._single(X) + self.offsets
        leaves = self.booster.predict(X, pred_leaf=True, num_threads=num_threads).astype(np.int64)
        return leaves.reshape(len(X), -1) + self.offsets

    def raw(self, leaves: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds) from leaf indices: what `predict(raw_score=True)` returns."""
        return self.leaf_values[leaves].sum(axis=1)

    def contributions(
        self, X: np.ndarray | None = None, leaves: np.ndarray | None = None, num_threads: int = 0
    ) -> np.ndarray:
        """n x (features + 1) contributions in log-odds; each row sums to its raw score.

        Args:
            X: n x features float matrix in the model's column order (or pass `leaves`).
            leaves: output of `leaves(X)`, to reuse one prediction.
            num_threads: LightGBM threads for the leaf prediction (0 = its default).
        """
        if leaves is None:
            leaves = self.leaves(X, num_threads)
        n = len(leaves)
        if n <= SMALL_N:
            out = self.M[leaves].sum(axis=1)
        else:
            cols = leaves.ravel()
            S = sp.csr_matrix(
                (np.ones(len(cols), dtype=np.float32), cols, np.arange(0, len(cols) + 1, leaves.shape[1])),
                shape=(n, len(self.M)),
            )
            out = np.asarray(S @ self.M)
        out[:, -1] = self.bias
        return out


def _value(node: dict) -> float:
    return float(node["leaf_value"] if "leaf_index" in node or "split_index" not in node else node["internal_value"])


def _walk(node: dict, acc: np.ndarray, leaves: dict[int, tuple[np.ndarray, float]]) -> None:
    """Depth-first: `acc` holds the attributions collected from the root down to `node`."""
    if "split_index" not in node:
        leaves[int(node.get("leaf_index", 0))] = (acc.copy(), _value(node))
        return
    here, f = _value(node), int(node["split_feature"])
    for side in ("left_child", "right_child"):
        child = node[side]
        acc[f] += _value(child) - here
        _walk(child, acc, leaves)
        acc[f] -= _value(child) - here


class _SingleRowLeaves:
    """Leaf indices of one row at a time through LightGBM's `PredictForMatSingleRowFast` C API.

    `Booster.predict` spends ~80 µs per call building a predictor and parsing parameters
    before a one-row prediction of a few µs; the fast API does that set-up once. One
    handle serves every thread under a lock (calls are µs long, the API's state is shared).
    """

    def __init__(self, booster, n_features: int, n_trees: int) -> None:
        from lightgbm.basic import _LIB, _safe_call

        self._lib, self._check, self._booster = _LIB, _safe_call, booster  # the booster must outlive the handle
        self.n_features, self.n_trees = n_features, n_trees
        self._handle = ctypes.c_void_p()
        self._check(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_PREDICT_LEAF_INDEX),
                ctypes.c_int(0),
                ctypes.c_int(booster.best_iteration),
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(n_features),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(self._handle),
            )
        )
        self._out = np.empty(n_trees, dtype=np.float64)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_len = ctypes.c_int64()
        self._lock = threading.Lock()

    @classmethod
    def create(cls, booster, n_features: int, n_trees: int) -> _SingleRowLeaves | None:
        """The fast path when it reproduces `predict(pred_leaf=True)` on probe rows, else None."""
        try:
            fast = cls(booster, n_features, n_trees)
        except Exception:  # noqa: BLE001 - an unusual model or build: keep the always-right path
            return None
        rng = np.random.default_rng(0)
        probe = rng.normal(scale=3.0, size=(8, n_features)) * rng.choice([1, 10, 100], size=(8, 1))
        probe[::3, ::2] = np.nan
        ref = booster.predict(probe, pred_leaf=True, num_threads=1).astype(np.int64).reshape(len(probe), -1)
        return fast if ref.shape == (len(probe), n_trees) and np.array_equal(fast(probe), ref) else None

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {X.shape}")
        out = np.empty((len(X), self.n_trees), dtype=np.int64)
        base, step = X.ctypes.data, X.strides[0]
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
