import numpy as np
import pytest

from sashelpers.measured import io

GOOD = "0.01 1.0 0.1\n0.02 0.9 0.1\n0.03 0.5 0.05\n0.04 0.4 0.04\n0.05 0.3 0.03\n"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_ascii_file_loads_in_nm(tmp_path):
    c = io.load_curve(write(tmp_path, "good.txt", GOOD))
    np.testing.assert_allclose(c.q_nm, [0.1, 0.2, 0.3, 0.4, 0.5])  # A^-1 in the file -> nm^-1
    np.testing.assert_allclose(c.intensity, [1.0, 0.9, 0.5, 0.4, 0.3])
    np.testing.assert_allclose(c.sigma, [0.1, 0.1, 0.05, 0.04, 0.03])
    c_nm = io.load_curve(write(tmp_path, "good2.txt", GOOD), q_unit="1/nm")
    np.testing.assert_allclose(c_nm.q_nm, [0.01, 0.02, 0.03, 0.04, 0.05])


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("nan.txt", GOOD.replace("0.9", "nan"), "non-finite"),
        ("inf.txt", GOOD.replace("0.9", "inf"), "non-finite"),
        ("neg.txt", GOOD.replace("0.01 1.0", "-0.01 1.0"), "positive"),
        ("zero.txt", GOOD.replace("0.01 1.0", "0 1.0"), "positive"),
        ("unsorted.txt", GOOD.replace("0.02 0.9", "0.035 0.9"), "increase"),
        ("empty.txt", "", "empty"),
        ("blank.txt", "# header only\n\n", "no numeric data"),
        ("onecol.txt", "0.01\n0.02\n0.03\n", "column"),
        ("sevencol.txt", "".join(f"0.0{i} 1 2 3 4 5 6\n" for i in range(1, 6)), "column"),
        ("ragged.txt", GOOD.replace("0.03 0.5 0.05", "0.03 0.5"), "columns"),
    ],
)
def test_malformed_files_are_rejected_with_a_reason(tmp_path, name, text, match):
    with pytest.raises(ValueError, match=match):
        io.load_curve(write(tmp_path, name, text))


def test_missing_file_and_unknown_unit(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        io.load_curve(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="q unit"):
        io.load_curve(write(tmp_path, "good.txt", GOOD), q_unit="furlongs")


def test_validate_curve_checks_lengths_and_positivity():
    with pytest.raises(ValueError, match="q has 3 points but I has 2"):
        io.validate_curve([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="I must be positive"):
        io.validate_curve([1, 2, 3], [1, 0, 2], positive_intensity=True)


@pytest.mark.parametrize("name, n_min, q_max_nm", [
    ("Anton-Paar.pdh", 600, 4.6),          # PDH: q stored in nm^-1
    ("APS_DND-CAT.TXT", 700, 1.51),         # ASCII, A^-1 -> nm^-1
    ("33837rear_1D_1.75_16.5_CanSAS1D.xml", 60, 6.3),
    ("33837rear_1D_1.75_16.5_NXcanSAS.h5", 60, 6.3),
])
def test_real_example_files(name, n_min, q_max_nm):
    c = io.load_curve(io.example_path(name))
    assert len(c) >= n_min
    assert c.q_nm.max() == pytest.approx(q_max_nm, rel=0.05)
    assert np.all(np.diff(c.q_nm) > 0) and np.all(np.isfinite(c.intensity))


def test_canSAS_xml_and_nxcansas_hold_the_same_curve():
    a = io.load_curve(io.example_path("33837rear_1D_1.75_16.5_CanSAS1D.xml"))
    b = io.load_curve(io.example_path("33837rear_1D_1.75_16.5_NXcanSAS.h5"))
    np.testing.assert_allclose(a.q_nm, b.q_nm, rtol=1e-5)


def test_unknown_example_name():
    with pytest.raises(ValueError, match="not a sasdata example"):
        io.example_path("no_such_file.txt")
