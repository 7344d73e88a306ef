"""The federation protocol: registry, wire format, disclosure control in process."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nordfed.fed import wire
from nordfed.fed.protocol import (
    AlgorithmError,
    InProcessFederation,
    SiteData,
    algorithm,
    get_algorithm,
)
from nordfed.privacy.disclosure import DisclosurePolicy, require_min_rows, suppress_counts


@algorithm("tests.row_sums", version="2")
def _row_sums(data: SiteData, params: dict) -> dict:
    df = data.frame(params.get("dataset"))
    require_min_rows(len(df), data.policy)
    return {"n": len(df), "sums": df[params["columns"]].to_numpy().sum(axis=0), "site": data.site}


def test_wire_roundtrip_keeps_arrays_and_numbers():
    obj = {"a": np.arange(6, dtype=float).reshape(2, 3), "b": np.int64(3), "c": [np.float32(0.5), "x"], "d": None}
    back = wire.decode(wire.encode(obj))
    np.testing.assert_array_equal(back["a"], obj["a"])
    assert back["a"].dtype == np.float64 and back["b"] == 3 and back["c"] == [0.5, "x"] and back["d"] is None
    with pytest.raises(TypeError, match="cannot send"):
        wire.encode({"x": object()})


def test_registry_knows_name_version_and_code_hash():
    algo = get_algorithm("tests.row_sums")
    assert algo.ref == "tests.row_sums@2"
    assert len(algo.code_hash) == 64
    with pytest.raises(KeyError, match="unknown algorithm"):
        get_algorithm("no.such.algorithm")


def test_in_process_run_and_refusal():
    rng = np.random.default_rng(0)
    frames = {s: pd.DataFrame(rng.normal(size=(n, 2)), columns=["x", "y"]) for s, n in [("DK", 30), ("NO", 12)]}
    fed = InProcessFederation.from_frames(frames)
    out = fed.run("tests.row_sums", {"columns": ["x", "y"]})
    assert list(out) == ["DK", "NO"]
    np.testing.assert_allclose(out["DK"]["sums"], frames["DK"].sum().to_numpy())
    strict = InProcessFederation.from_frames(frames, DisclosurePolicy(min_cell_count=20))
    with pytest.raises(AlgorithmError, match=r"NO: refused: fewer rows than .* minimum cell count \(20\)") as exc:
        strict.run("tests.row_sums", {"columns": ["x"]})
    assert exc.value.refused and exc.value.site == "NO"


def test_suppress_counts():
    assert suppress_counts({"a": 0, "b": 3, "c": 10}, DisclosurePolicy()) == {"a": 0, "b": None, "c": 10}
    with pytest.raises(ValueError):
        DisclosurePolicy(min_cell_count=0)


def test_third_party_algorithms_register_through_entry_points(tmp_path, monkeypatch):
    """A package that declares [project.entry-points."nordfed.algorithms"] adds its partials at discovery."""
    from nordfed.fed import protocol

    (tmp_path / "acme_algos.py").write_text(
        "from nordfed.fed.protocol import algorithm\n\n"
        "@algorithm('acme.mean', version='0.3')\n"
        "def mean(data, params):\n"
        "    return {'mean': float(data.frame()[params['column']].mean())}\n"
    )
    dist = tmp_path / "acme_algos-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-algos\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text("[nordfed.algorithms]\nacme = acme_algos\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(protocol, "_loaded", False)
    algo = get_algorithm("acme.mean")
    assert algo.ref == "acme.mean@0.3"
    fed = InProcessFederation.from_frames({"EE": pd.DataFrame({"x": np.arange(10.0)})})
    assert fed.run("acme.mean", {"column": "x"}) == {"EE": {"mean": 4.5}}
