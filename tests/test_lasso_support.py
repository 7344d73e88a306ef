"""Shared data for the LASSO / evaluation / risk-group tests: public and simulated sets split across sites."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer

from nordfed.fed.protocol import InProcessFederation
from nordfed.privacy.disclosure import DisclosurePolicy


def breast_cancer() -> tuple[pd.DataFrame, list[str]]:
    """scikit-learn's breast cancer data, standardised (population sd), outcome ``y``."""
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    cols = [f"x{i}" for i in range(x.shape[1])]
    df = pd.DataFrame(x, columns=cols)
    df["y"] = y
    return df, cols


def simulated(n: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Continuous and sparse 0/1 covariates on different scales, a few true effects, plus age, sex, year."""
    rng = np.random.default_rng(seed)
    cont = rng.normal(size=(n, 4)) * [1.0, 5.0, 0.2, 30.0] + [0.0, 50.0, 1.0, 100.0]
    binary = rng.binomial(1, [0.5, 0.2, 0.05, 0.3, 0.1, 0.02], size=(n, 6))
    x = np.column_stack([cont, binary]).astype(float)
    cols = ["c0", "c1", "c2", "c3", "b0", "b1", "b2", "b3", "b4", "b5"]
    z = (x - x.mean(0)) / x.std(0)
    eta = -0.8 + z @ np.array([0.9, -0.5, 0.0, 0.3, 0.6, 0.0, 0.4, 0.0, -0.3, 0.0])
    df = pd.DataFrame(x, columns=cols)
    df["y"] = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    df["age"] = rng.integers(35, 95, n)
    df["sex"] = rng.choice(["F", "M"], n)
    df["year"] = rng.integers(2010, 2021, n)
    return df, cols


def split(df: pd.DataFrame, k: int, seed: int = 1, min_cell_count: int = 10) -> InProcessFederation:
    """Rows dealt to ``k`` sites at random (unequal sizes)."""
    site = np.random.default_rng(seed).choice(k, size=len(df), p=np.linspace(1, 2, k) / np.linspace(1, 2, k).sum())
    frames = {f"S{i}": df[site == i].reset_index(drop=True) for i in range(k)}
    return InProcessFederation.from_frames(frames, DisclosurePolicy(min_cell_count=min_cell_count))


def pooled_kkt(x: np.ndarray, y: np.ndarray, b0: float, b: np.ndarray, lam: float, alpha: float) -> float:
    """Largest KKT violation of (1/n) logloss + lam*(alpha|b|_1 + (1-alpha)/2|b|^2) on pooled rows (numpy)."""
    p = 1 / (1 + np.exp(-(b0 + x @ b)))
    g = x.T @ (p - y) / len(y) + lam * (1 - alpha) * b
    g0 = np.mean(p - y)
    nz = b != 0
    v = np.r_[abs(g0), np.abs(g[nz] + lam * alpha * np.sign(b[nz])), np.maximum(np.abs(g[~nz]) - lam * alpha, 0)]
    return float(v.max())
