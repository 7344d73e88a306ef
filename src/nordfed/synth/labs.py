"""Writing lab and vital-sign values the way each site records them: its unit, its rounding, its reference range."""

from __future__ import annotations

import numpy as np

from nordfed.synth.events import Events
from nordfed.synth.profiles import LAB_MODEL_UNITS, SiteProfile, site_unit

#: decimals a site unit is recorded with
_DECIMALS = {"g/dL": 1, "g/L": 0, "mmol/L": 1, "mg/L": 1, "umol/L": 0, "10*9/L": 1, "kg": 1, "cm": 0, "kg/m2": 1,
             "U/L": 0, "%": 1, "{score}": 0}


def to_site_unit(concept: int, site: str, model_value: np.ndarray) -> np.ndarray:
    """A model-unit value as ``site`` records it (unit conversion and rounding)."""
    _unit, code, factor = site_unit(concept, site)
    return np.round(np.asarray(model_value, dtype=float) / factor, _DECIMALS.get(code, 2))


def as_recorded(prof: SiteProfile, concept: int, model_value: np.ndarray) -> np.ndarray:
    """The model-unit value after the site's conversion and rounding, back in the model unit: what a feature
    extractor recovers from the CDM, so truth models use it rather than the unrounded draw."""
    return to_site_unit(concept, prof.code, model_value) * site_unit(concept, prof.code)[2]


def emit_labs(prof: SiteProfile, ev: Events, person: np.ndarray, date: np.ndarray, concept: int,
              model_value: np.ndarray, visit: np.ndarray | int = -1, planted: int = 0) -> None:
    """Measurement rows for ``concept`` in the site's unit; ``model_value`` is in the model unit."""
    if len(person) == 0:
        return
    unit, _code, factor = site_unit(concept, prof.code)
    _m_unit, _m_code, low, high = LAB_MODEL_UNITS[concept]
    value = to_site_unit(concept, prof.code, model_value)
    ev.add("measurement", person=person, start=date, concept=concept, value=value, unit=unit, visit=visit,
           range_low=np.round(low / factor, 1), range_high=np.round(high / factor, 1), planted=planted)
