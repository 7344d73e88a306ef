"""Node-side halves of the penalised logistic regression: moments, Newton sums and fold deviances.

Every partial builds the same analysis table with :func:`site_table` (filter, derived linear predictors,
complete cases, deterministic folds), so the rows behind each aggregate are identical across rounds.
"""

from __future__ import annotations

import json
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from nordfed.fed.lasso_solver import design, logistic_sums, logits
from nordfed.fed.protocol import SiteData, algorithm
from nordfed.privacy.disclosure import (
    check_counts,
    require_min_rows,
    require_params_ok,
    require_spread_weights,
    site_rng,
)

#: the parameters that shape a site table (with the data table itself) and the tables kept
_TABLE_PARAMS = ("covariates", "outcome", "where", "derived", "offset", "n_folds", "seed", "keep")
_TABLES: OrderedDict[tuple[int, bytes, str], tuple[weakref.ref, dict[str, Any]]] = OrderedDict()
_TABLES_KEPT = 8

_OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal}


def _require_numeric(frame: pd.DataFrame, cols: list[str], site: str, what: str = "column") -> None:
    """Numbers or booleans only; named by column and dtype, since numpy's own conversion error would quote the
    offending value to the researcher."""
    for c in cols:
        dtype = frame[c].dtype
        if not pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            raise ValueError(f"site {site}: {what} {c!r} is not numeric (dtype {dtype})")


def linear_predictor(frame: pd.DataFrame, model: Mapping[str, Any], site: str = "?") -> np.ndarray:
    """A fitted model's logit on ``frame``: ``intercept + X @ coef`` (model as in ``LassoFit.to_model``)."""
    cols = list(model["covariates"])
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"site {site}: the model needs column(s) {', '.join(missing)} missing from the data")
    _require_numeric(frame, cols, site, "model column")
    x = frame[cols].to_numpy(dtype=float)
    return float(model["intercept"]) + x @ np.asarray(model["coef"], dtype=float)


#: the test fractions a split may ask for: a test (or training) part of a few rows would let the difference of a
#: fit on all rows and on the other part describe those rows
SPLIT_FRACTIONS = (0.05, 0.5)


def split_mask(data: SiteData, frame: pd.DataFrame, split: Mapping[str, Any], outcome: str) -> np.ndarray:
    """PatientLevelPrediction's train/test split at a site: ``{"split": "train"|"test", "test_fraction": f,
    "seed": s}`` keeps that part of the rows. Stratified by outcome (each outcome class gives ``round(f * rows)``
    rows to the test part), drawn by the site's keyed generator (:func:`site_rng`): the researcher cannot tell
    which rows are in which part, and every algorithm on the same table sees the same parts."""
    part, f = split.get("split"), float(split.get("test_fraction", 0.0))
    if part not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {part!r}")
    lo, hi = SPLIT_FRACTIONS
    if not lo <= f <= hi:
        raise ValueError(f"test_fraction must be between {lo} and {hi}, not {f}")
    if outcome not in frame.columns:
        raise ValueError(f"site {data.site}: outcome {outcome!r} not in the data")
    u = site_rng(data.policy, "test-split", int(split.get("seed", 0))).random(len(frame))
    y = frame[outcome].to_numpy(dtype=float)
    test = np.zeros(len(frame), dtype=bool)
    for cls in (y == 1, y == 0, np.isnan(y)):
        rows = np.flatnonzero(cls)
        test[rows[np.argsort(u[rows], kind="stable")[: round(f * len(rows))]]] = True
    return test if part == "test" else ~test


def _where_mask(frame: pd.DataFrame, where: Mapping[str, Any], site: str) -> np.ndarray:
    col, op, value = where["column"], where["op"], where["value"]
    if col not in frame.columns:
        raise ValueError(f"site {site}: filter column {col!r} not in the data")
    if op not in _OPS:
        raise ValueError(f"filter operator {op!r} not one of {', '.join(_OPS)}")
    series = frame[col]
    if pd.api.types.is_numeric_dtype(series):
        return _OPS[op](series.to_numpy(dtype=float), float(value))
    return _OPS[op](pd.to_datetime(series, errors="coerce").to_numpy(), np.datetime64(pd.Timestamp(value)))


def site_table(data: SiteData, params: Mapping[str, Any]) -> dict[str, Any]:
    """The site's rows for this analysis: ``x`` (n×p), ``y`` (0/1), ``offset`` (or None), ``folds`` (or None).

    params: ``dataset``, ``covariates``, ``outcome``, optional ``where`` {column, op, value} or a train/test part
    (:func:`split_mask`),
    ``derived`` {name: model} (adds a model's logit as a column), ``offset`` (a column name),
    ``n_folds`` and ``seed`` (fold = seeded permutation of the complete rows modulo ``n_folds``; at a node
    the seed is keyed by the node's secret, :func:`~nordfed.privacy.disclosure.site_rng`), ``keep``
    (extra columns returned as-is for the same rows).

    A fit asks for the same table every round: it is kept for the same data table and parameters (callers only
    read it).
    """
    frame = data.frame(params.get("dataset"))
    # the folds depend on the site's secret too
    key = (id(frame), data.policy.secret,
           json.dumps({k: params.get(k) for k in _TABLE_PARAMS}, sort_keys=True, default=str))
    hit = _TABLES.get(key)
    if hit is not None and hit[0]() is frame:
        _TABLES.move_to_end(key)
        return hit[1]
    table = _site_table(data, frame, params)
    _TABLES[key] = (weakref.ref(frame), table)
    while len(_TABLES) > _TABLES_KEPT:
        _TABLES.popitem(last=False)
    return table


def _site_table(data: SiteData, frame: pd.DataFrame, params: Mapping[str, Any]) -> dict[str, Any]:
    site = data.site
    for name, model in (params.get("derived") or {}).items():
        frame = frame.assign(**{name: linear_predictor(frame, model, site)})
    where = params.get("where")
    if where and "split" in where:
        frame = frame[split_mask(data, frame, where, params["outcome"])]
    elif where:
        frame = frame[_where_mask(frame, where, site)]
    covariates = list(params["covariates"])
    outcome = params["outcome"]
    offset_col = params.get("offset")
    cols = [*covariates, outcome, *([offset_col] if offset_col else [])]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"site {site}: column(s) {', '.join(missing)} not in the data")
    keep = [c for c in params.get("keep") or [] if c not in cols]
    if any(c not in frame.columns for c in keep):
        raise ValueError(f"site {site}: column(s) {', '.join(c for c in keep if c not in frame.columns)} "
                         "not in the data")
    _require_numeric(frame, cols, site)
    arr = frame[cols].to_numpy(dtype=float)
    complete = ~np.isnan(arr).any(axis=1)  # complete cases, the same rows in every round
    if not complete.all():
        arr = arr[complete]
    p = len(covariates)
    y = arr[:, p]
    bad = (y != 0) & (y != 1)
    if bad.any():
        row = frame.index[np.flatnonzero(complete)[np.flatnonzero(bad)[0]]]
        # the row and the column, not the value: this message reaches the researcher
        raise ValueError(f"site {site}: row {row}, outcome {outcome!r} is not 0 or 1")
    k = int(params.get("n_folds") or 0)
    folds = None
    if k > 1:
        folds = site_rng(data.policy, "cv-folds", int(params.get("seed", 0))).permutation(len(y)) % k
    all_keep = keep + [c for c in params.get("keep") or [] if c in cols]
    extra = frame[all_keep][complete] if all_keep else None
    return {
        "x": arr[:, :p],
        "y": y,
        "offset": arr[:, p + 1] if offset_col else None,
        "folds": folds,
        "keep": {} if extra is None else {c: extra[c].to_numpy() for c in extra.columns},
    }


def _rows(table: Mapping[str, Any], fold: int, train: bool) -> np.ndarray | slice:
    if fold < 0 or table["folds"] is None:
        return slice(None)
    return table["folds"] != fold if train else table["folds"] == fold


def _protect(y: np.ndarray, n_params: int, data: SiteData, what: str) -> None:
    require_min_rows(len(y), data.policy, what)
    require_params_ok(n_params, len(y), data.policy)
    events = int(y.sum())
    check_counts([events, len(y) - events], data.policy, f"outcome class count(s) in {what}")


def _protect_fold(table: Mapping[str, Any], fold: int, data: SiteData) -> None:
    """A fold's held-out rows: sums over all rows minus the fold's training sums are sums over them, so they need
    the minimum cell count as ``moments`` requires (with n_folds = n they were a single row)."""
    if fold >= 0 and table["folds"] is not None:
        require_min_rows(int(np.sum(table["folds"] == fold)), data.policy, "rows in a fold")


@algorithm("nordfed.lasso.moments", "1")
def moments(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Per fold (or for all rows): n, events, covariate means and centred sums of squares."""
    t = site_table(data, params)
    x, y, folds = t["x"], t["y"], t["folds"]
    groups = [np.arange(len(y))] if folds is None else [np.flatnonzero(folds == f) for f in range(folds.max() + 1)]
    parts = []
    for idx in groups:
        xs, ys = x[idx], y[idx]
        require_min_rows(len(ys), data.policy, "rows in a fold" if folds is not None else "rows")
        mean = xs.mean(axis=0) if len(ys) else np.zeros(x.shape[1])
        parts.append({"n": len(ys), "events": int(ys.sum()), "mean": mean, "m2": ((xs - mean) ** 2).sum(axis=0)})
    _protect(y, x.shape[1] + 1, data, "rows")
    return {"parts": parts}


@algorithm("nordfed.lasso.newton", "3")
def newton(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Summed logloss, gradient and Hessian (its upper triangle, :func:`~nordfed.fed.lasso_solver.pack_symmetric`)
    at each requested point ``{fold, beta, center, scale}``; with ``columns`` (indices into ``[intercept,
    covariates]``) the Hessian of those only, a block of the whole one."""
    t = site_table(data, params)
    out = []
    for pt in params["points"]:
        fold = int(pt.get("fold", -1))
        rows = _rows(t, fold, train=True)
        y = t["y"][rows]
        _protect(y, len(pt["beta"]), data, "training rows")
        _protect_fold(t, fold, data)
        z = design(t["x"][rows], np.asarray(pt["center"]), np.asarray(pt["scale"]))
        off = None if t["offset"] is None else t["offset"][rows]
        beta = np.asarray(pt["beta"], dtype=float)
        hessian = bool(pt.get("hessian", True))
        eta = logits(z, beta, off)
        if hessian:
            p = expit(eta)
            require_spread_weights(p * (1.0 - p), "the Hessian")
        cols = pt.get("columns")
        if cols is not None:
            cols = np.asarray(cols, dtype=np.int64)
            if cols.ndim != 1 or not len(cols) or cols.min() < 0 or cols.max() >= z.shape[1]:
                raise ValueError(f"columns must be indices between 0 and {z.shape[1] - 1}")
        out.append(logistic_sums(z, y, beta, off, hessian=hessian, packed=True, eta=eta, columns=cols))
    return {"results": out}


@algorithm("nordfed.lasso.deviance", "1")
def deviance(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Held-out deviance of each fold's path ``{fold, betas (L×(p+1)), center, scale}`` on that fold's rows."""
    t = site_table(data, params)
    out = []
    for pt in params["points"]:
        rows = _rows(t, int(pt["fold"]), train=False)
        y = t["y"][rows]
        require_min_rows(len(y), data.policy, "rows in a fold")
        z = design(t["x"][rows], np.asarray(pt["center"]), np.asarray(pt["scale"]))
        eta = z @ np.asarray(pt["betas"]).T
        if t["offset"] is not None:
            eta = eta + t["offset"][rows][:, None]
        dev = 2.0 * np.sum(np.logaddexp(0.0, eta) - y[:, None] * eta, axis=0)
        out.append({"n": len(y), "deviance": dev})
    return {"results": out}
