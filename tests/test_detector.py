"""Known-answer tests of sashelpers.detector: pixel -> q, binning onto the model grid, the GALAXI file."""

import gzip
import math

import numpy as np
import pytest

from sashelpers.measured import detector as d

ALPHA_I = 0.5  # deg
PIXEL = 0.1  # mm
SPEC_PX = 50  # the specular spot lies this many pixel centres above the direct beam
DISTANCE = SPEC_PX * PIXEL / math.tan(math.radians(2 * ALPHA_I))  # 286.45 mm
BEAM_COL, BEAM_ROW = 10, 5  # pixel-centre indices of the direct beam
GEO = {"wavelength_nm": 0.1, "alpha_i_deg": ALPHA_I, "distance_mm": DISTANCE, "pixel_mm": PIXEL,
       "beam_col_px": BEAM_COL + 0.5, "beam_row_px": BEAM_ROW + 0.5}  # pixel-edge coordinates
K = 2 * math.pi / 0.1


def test_beam_column_is_qy_zero_and_qy_step():
    qy, qz, valid = d.pixel_q((80, 30), GEO)
    assert qy.shape == qz.shape == valid.shape == (80, 30)
    np.testing.assert_allclose(qy[:, BEAM_COL], 0.0, atol=1e-12)
    assert np.all(qy[:, BEAM_COL + 1:] > 0) and np.all(qy[:, :BEAM_COL] < 0)  # q_y > 0 to the right
    step = qy[BEAM_ROW, BEAM_COL + 1] - qy[BEAM_ROW, BEAM_COL]
    assert step == pytest.approx(K * PIXEL / DISTANCE, rel=1e-4)


def test_specular_row_and_horizon():
    qy, qz, valid = d.pixel_q((80, 30), GEO)
    row = BEAM_ROW + SPEC_PX  # alpha_f = alpha_i: 2 alpha_i above the direct beam
    assert qz[row, BEAM_COL] == pytest.approx(2 * K * math.sin(math.radians(ALPHA_I)), rel=1e-9)
    # the horizon (alpha_f = 0) lies (almost exactly) half-way, 25 px above the beam
    assert not valid[:BEAM_ROW + SPEC_PX // 2, BEAM_COL].any()
    assert valid[BEAM_ROW + SPEC_PX // 2 + 1:, BEAM_COL].all()


def test_energy_from_wavelength():
    geo = d.check_geometry(GEO)
    assert geo.energy_kev == pytest.approx(12.3984198)
    assert geo.k_nm == pytest.approx(K)


def _detector(shape=(240, 340), beam_col=170):
    geo = {**GEO, "distance_mm": 1000.0, "beam_col_px": beam_col + 0.5}
    qy, qz, valid = d.pixel_q(shape, geo)
    return geo, qy, qz, valid


def test_to_model_grid_reproduces_a_linear_function_and_folds_qy():
    geo, qy, qz, _ = _detector()  # ~0.0063 nm^-1 per pixel, ~20 pixels per bin
    image = 3.0 + 2.0 * qz + qy  # odd in q_y: the fold averages it out
    n = 8
    inten, cover = d.to_model_grid(image, geo, n, qy_range_nm=(0, 1), qz_range_nm=(0, 1))
    assert inten.shape == cover.shape == (n, n)
    centres = (np.arange(n) + 0.5) / n
    horizon = K * math.sin(math.radians(ALPHA_I))  # 0.548 nm^-1
    above = (centres - 0.5 / n) > horizon  # bins wholly above the horizon
    expected = 3.0 + 2.0 * centres[:, None] * np.ones(n)
    assert np.all(cover[above] == 1.0)
    np.testing.assert_allclose(inten[above], expected[above], atol=0.01)
    below = (centres + 0.5 / n) < horizon
    assert np.all(cover[below] == 0) and np.all(inten[below] == 0)


def test_to_model_grid_abs_qy_masks_and_coverage():
    geo, qy, qz, _ = _detector()
    image = 1.0 + np.abs(qy)
    image[:, 170:] = np.nan  # mask the whole right half: the left half still covers every bin
    inten, cover = d.to_model_grid(image, geo, 4, qy_range_nm=(0, 1), qz_range_nm=(0.6, 1.0))
    assert np.all(cover == 1.0)
    np.testing.assert_allclose(inten, 1.0 + (np.arange(4) + 0.5) / 4 * np.ones((4, 1)), atol=0.01)
    image[qz < 0.8] = np.nan  # both halves masked below q_z = 0.8: the two lower rows of bins empty
    inten, cover = d.to_model_grid(image, geo, 4, qy_range_nm=(0, 1), qz_range_nm=(0.6, 1.0))
    assert np.all(cover[:2] == 0) and np.all(inten[:2] == 0) and np.all(cover[2:] == 1)


def test_to_model_grid_partial_coverage_off_the_detector():
    geo, qy, qz, _ = _detector(beam_col=20)  # |q_y| reaches 0.13 on the left, 2.0 on the right
    inten, cover = d.to_model_grid(np.ones((240, 340)), geo, 4, qy_range_nm=(0, 4), qz_range_nm=(0.6, 1.0))
    assert np.all(cover[:, 0] == 1) and np.all(cover[:, 3] == 0) and np.all(inten[:, 3] == 0)


@pytest.mark.parametrize("image, geo, kwargs, match", [
    (np.ones(10), GEO, {}, "2D"),
    (np.ones((2, 3, 4)), GEO, {}, "2D"),
    (np.ones((80, 30)), {**GEO, "distance_mm": float("nan")}, {}, "finite"),
    (np.ones((80, 30)), {**GEO, "pixel_mm": -1.0}, {}, "pixel_mm"),
    (np.ones((80, 30)), {k: v for k, v in GEO.items() if k != "alpha_i_deg"}, {}, "lacks"),
    (np.ones((80, 30)), {**GEO, "n_rows": 81, "n_cols": 30}, {}, "does not match"),
    (np.ones((80, 30)), GEO, {"qz_range_nm": (40.0, 50.0)}, "no valid detector pixel"),
    (np.full((80, 30), np.nan), GEO, {}, "no valid detector pixel"),
    (np.ones((80, 30)), GEO, {"qy_range_nm": (-1.0, 1.0)}, "qy_range_nm"),
    (np.ones((80, 30)), GEO, {"image_size": 1}, "image_size"),
])
def test_bad_input_raises(image, geo, kwargs, match):
    kwargs = {"image_size": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        d.to_model_grid(image, geo, **kwargs)


def test_read_tiff_rejects_other_files(tmp_path):
    p = tmp_path / "x.tif.gz"
    p.write_bytes(gzip.compress(b"not a tiff at all"))
    with pytest.raises(ValueError, match="not a TIFF"):
        d.read_tiff_int32(p)


def test_galaxi_example_orientation_and_masks():
    m = d.galaxi_example(mask_specular=False)
    geo = m.geometry
    assert m.image.shape == geo.shape == (1043, 981)
    assert geo.energy_kev == pytest.approx(9.2526, abs=1e-4)
    assert "GPL-3.0+" in m.provenance["licence"]
    gap = np.isnan(m.image)
    assert gap[:, 487:494].all() and gap.sum() == 7 * 1043  # the module gap, nothing else
    # rows run upward: the brightest pixel is the specular spot, 2 alpha_i above the direct beam
    row, col = np.unravel_index(np.nanargmax(m.image), m.image.shape)
    spec_row = geo.beam_row_px - 0.5 + geo.distance_mm * math.tan(math.radians(2 * geo.alpha_i_deg)) / geo.pixel_mm
    assert abs(row - spec_row) < 1.5 and abs(col - (geo.beam_col_px - 0.5)) < 1.5
    qy, qz, _ = d.pixel_q(m.image.shape, geo)
    assert qz[row, col] == pytest.approx(2 * geo.k_nm * math.sin(math.radians(geo.alpha_i_deg)), rel=0.01)
    masked = d.galaxi_example()  # the specular box becomes NaN
    assert np.isnan(masked.image[row, col]) and np.nanmax(masked.image) < 0.02 * m.image[row, col]


def test_read_tiff_matches_tifffile():
    tifffile = pytest.importorskip("tifffile")
    path = d.galaxi_dir() / "galaxi_data.tif.gz"
    ours = d.read_tiff_int32(path)
    theirs = tifffile.imread(gzip.open(path))
    assert ours.dtype == np.int32
    np.testing.assert_array_equal(ours, theirs)
