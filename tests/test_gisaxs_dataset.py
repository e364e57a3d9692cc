"""The 7-class GISAXS dataset generator (studies 3 and 4)."""

import numpy as np
import pytest

from sashelpers.core import datasets
from sashelpers.physics import gisaxs as g
from sashelpers.studies import gisaxs_cnn

SMALL = gisaxs_cnn.dataset_config(image_size=16, supersample=1, n_orient=8)


def test_chunk_shapes_dtypes_and_ranges():
    d = gisaxs_cnn.dataset_chunk(SMALL, 0, 0, 9)
    assert d["images"].shape == (9, 16, 16) and d["images"].dtype == np.float32
    assert d["labels"].dtype == np.int64 and d["labels"].tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    assert d["reps"].shape == (9, 3)
    assert np.all((d["images"] >= 0) & (d["images"] <= 1)) and np.all(d["images"].max(axis=(1, 2)) == 1)
    assert np.all((d["lattice_nm"] >= 10) & (d["lattice_nm"] <= 30))
    assert np.all((d["alpha_i_deg"] >= 0.1) & (d["alpha_i_deg"] <= 0.3))
    nn = np.array([g.nearest_neighbour_nm(g.CLASS_NAMES[k], a) for k, a in zip(d["labels"], d["lattice_nm"])])
    assert np.all(d["radius_nm"] < nn / 2)  # no overlapping spheres
    assert len(g.CLASS_NAMES) == 7


def test_deterministic_and_independent_of_chunking():
    whole = gisaxs_cnn.dataset_chunk(SMALL, 3, 0, 6)
    parts = [gisaxs_cnn.dataset_chunk(SMALL, 3, 0, 2), gisaxs_cnn.dataset_chunk(SMALL, 3, 2, 6)]
    for key in whole:
        np.testing.assert_array_equal(whole[key], np.concatenate([p[key] for p in parts]))
    other = gisaxs_cnn.dataset_chunk(SMALL, 4, 0, 6)
    assert not np.array_equal(whole["images"], other["images"])


def test_labels_balanced_through_generate(tmp_path, monkeypatch):
    monkeypatch.setenv("SASHELPERS_CACHE", str(tmp_path))
    cfg = gisaxs_cnn.dataset_config(image_size=8, supersample=1, n_orient=2)
    d = datasets.generate("gisaxs7-test", gisaxs_cnn.dataset_chunk, cfg, 35, seed=1, chunk_size=10, progress=False)
    assert np.bincount(d["labels"]).tolist() == [5] * 7
    again = datasets.generate("gisaxs7-test", gisaxs_cnn.dataset_chunk, cfg, 35, seed=1, chunk_size=10, progress=False)
    np.testing.assert_array_equal(d["images"], again["images"])


def test_laue_peaks_span_two_pixels():
    cfg = gisaxs_cnn.dataset_config(image_size=32, supersample=2, reps=(50, 50), reps_z=(50, 50))
    dq = 2.0 / 64
    for name in g.CLASS_NAMES:
        for a in (10.0, 30.0):
            cap = g.reps_cap(name, a, dq, 2.0)
            cell, _ = g.cell_vectors_nm(name, a)
            fwhm = 0.886 * 2 * np.pi / (np.array(cap) * np.linalg.norm(cell, axis=1))
            assert np.all((fwhm >= 2 * dq) | (np.array(cap) == 1))
            p = gisaxs_cnn.sample_parameters(name, cfg, np.random.default_rng(0))
            assert all(n <= c for n, c in zip(p["reps"], g.reps_cap(name, p["lattice_nm"], dq, 2.0)))


def test_classes_visually_distinct():
    """Same lattice constant, size and N: two grain draws of one class correlate more with each
    other than with any other class."""
    cfg = gisaxs_cnn.dataset_config(image_size=32, supersample=2, n_orient=30)
    imgs = {}
    for name in g.CLASS_NAMES:
        for s in (1, 2):
            rng = np.random.default_rng(s)
            p = {"lattice_nm": 20.0, "radius_nm": 0.35 * g.nearest_neighbour_nm(name, 20.0), "reps": (6, 6, 4),
                 "alpha_i_deg": 0.2, "angles_deg": rng.uniform(0, g.symmetry_range_deg(name), 30)}
            imgs[name, s] = gisaxs_cnn.render(name, p, cfg).ravel()
    for name in g.CLASS_NAMES:
        within = np.corrcoef(imgs[name, 1], imgs[name, 2])[0, 1]
        between = max(np.corrcoef(imgs[name, 1], imgs[other, 2])[0, 1] for other in g.CLASS_NAMES if other != name)
        assert within > 0.9 and within > between + 0.05, (name, within, between)


def test_area_average_and_log_normalise():
    a = np.arange(16.0).reshape(4, 4)
    np.testing.assert_allclose(g.area_average(a, 2), [[2.5, 4.5], [10.5, 12.5]])
    img = np.array([[0.0, 1e-7], [1e-3, 1.0]])
    np.testing.assert_allclose(g.log_normalise(img, 6), [[0, 0], [0.5, 1]], atol=1e-7)
    assert np.all(g.log_normalise(np.zeros((3, 3))) == 0)
    grid = g.pixel_grid(4, (0, 2), (0, 1), supersample=2)
    np.testing.assert_allclose(grid.qy_nm, 0.125 + 0.25 * np.arange(8))
    assert grid.shape == (8, 8)


@pytest.mark.parametrize("kwargs, word", [
    ({"image_size": 4}, "image_size"), ({"supersample": 0}, "supersample"), ({"n_orient": 1.5}, "n_orient"),
    ({"lattice_nm": (30, 10)}, "lattice_nm"), ({"radius_fraction": (0.2, 0.6)}, "radius_fraction"),
    ({"reps": (1.5, 3)}, "reps"), ({"alpha_i_deg": "x"}, "alpha_i_deg"), ({"colour": 1}, "colour"),
    ({"substrate": "Cu"}, "substrate"), ({"qz_range_nm": (1, 1)}, "qz_range_nm"),
])
def test_config_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        gisaxs_cnn.dataset_config(**kwargs)
