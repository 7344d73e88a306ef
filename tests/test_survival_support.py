"""Survival data sets shipped by lifelines and scikit-survival, as numeric frames split into sites."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nordfed.fed.protocol import InProcessFederation
from nordfed.privacy.disclosure import DisclosurePolicy


def rossi() -> pd.DataFrame:
    from lifelines.datasets import load_rossi

    return load_rossi().astype(float)


def lung() -> pd.DataFrame:
    from lifelines.datasets import load_lung

    return load_lung().dropna().reset_index(drop=True).astype(float)


def gbsg2() -> pd.DataFrame:
    from sksurv.datasets import load_gbsg2

    X, y = load_gbsg2()
    df = X.assign(horTh=(X.horTh == "yes").astype(float), menostat=(X.menostat == "Post").astype(float),
                  tgrade=X.tgrade.astype(str), grade=X.tgrade.cat.codes.astype(float))
    return df.assign(time=y["time"], event=y["cens"].astype(float)).reset_index(drop=True)


def whas500() -> pd.DataFrame:
    from sksurv.datasets import load_whas500

    X, y = load_whas500()
    df = X.apply(lambda c: c.astype(float))
    return df.assign(time=y["lenfol"], event=y["fstat"].astype(float)).reset_index(drop=True)


def with_sites(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Rows dealt into ``k`` sites in blocks of consecutive rows (site column ``site``)."""
    return df.assign(site=np.repeat(np.arange(k), int(np.ceil(len(df) / k)))[: len(df)])


def federation(df: pd.DataFrame, policy: DisclosurePolicy | None = None) -> InProcessFederation:
    frames = {f"site{s}": part.drop(columns="site").reset_index(drop=True) for s, part in df.groupby("site")}
    return InProcessFederation.from_frames(frames, policy)


EXACT = DisclosurePolicy(min_cell_count=10, exact_event_times=True)
