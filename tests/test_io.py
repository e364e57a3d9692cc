import re
import warnings

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
@pytest.mark.filterwarnings("ignore:.*no q resolution:UserWarning")  # APS_DND-CAT's columns 3-4
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


# ---- every sasdata example file: a curve, or a ValueError that names the file and the cause ----

# what each example file is: loads (its number of points) or the cause its error must name
EXAMPLES = {
    "1d_data/10000A_sphere_dsm.xml": 75, "1d_data/100nmPinholeSphere.txt": 150,
    "1d_data/100nmSpheresNodQ.txt": 150, "1d_data/10wtAOT_Reline_120_reduced.pdh": 748,
    "1d_data/1umSlitSmearSphere.ABS": 150, "1d_data/33837rear_1D_1.75_16.5_CanSAS1D.xml": 66,
    "1d_data/33837rear_1D_1.75_16.5_NXcanSAS.h5": 66, "1d_data/33837rear_1D_1.75_16.5_NXcanSAS_v3.h5": 66,
    "1d_data/98929.txt": 140, "1d_data/AOT_Microemulsion-Core_Contrast.xml": 137,
    "1d_data/AOT_Microemulsion-Drop_Contrast.xml": 137, "1d_data/AOT_Microemulsion-Shell_Contrast.xml": 137,
    "1d_data/APS_DND-CAT.TXT": 733, "1d_data/AUSANS_run3_2_no_buffer.ABS": 115,
    "1d_data/AUSANS_run4_1_with_buffer.ABS": 114, "1d_data/Alumina_usaxs.csv": 112,
    "1d_data/Anton-Paar.pdh": 673, "1d_data/FK403_0006_Nika.hdf": 118, "1d_data/ISIS_83404.TXT": 121,
    "1d_data/ISIS_98929.TXT": 140, "1d_data/ISIS_Polymer_Blend_RT2.xml": 124,
    "1d_data/ISIS_Polymer_Blend_TK49.xml": 102, "1d_data/Lew_Sa3_DSM_QinA.h5": 490,
    "1d_data/Ludox_silica.xml": 92, "1d_data/P123_D2O_10_percent.xml": 124,
    "1d_data/P123_D2O_30_percent.xml": 124, "1d_data/P123_D2O_40_percent.xml": 124,
    "1d_data/VTMA.h5": 300, "1d_data/apoferritin.txt": 395, "1d_data/circular_test.txt": 197,
    "1d_data/conalbumin.txt": 395, "1d_data/cyl_400_20.txt": 20, "1d_data/cyl_400_40.txt": 54,
    "1d_data/cyl_testdata.txt": 43, "1d_data/cyl_testdata1.txt": 54, "1d_data/cyl_testdata2.txt": 50,
    "1d_data/hSDS_D2O_0p5_percent.xml": 137, "1d_data/hSDS_D2O_2p0_percent.xml": 137,
    "1d_data/hSDS_D2O_2p0_percent_0p2M_NaCl.xml": 137, "1d_data/n_coreshell.txt": 100,
    "1d_data/rpa_igor.txt": 100, "1d_data/saxess_example.pdh": 748, "1d_data/sphere_60_q0_2.txt": 99,
    "1d_data/sphere_80.txt": 99, "1d_data/x_coreshell_1.txt": 1000, "1d_data/x_coreshell_2.txt": 1000,
    "1d_data/x_coreshell_3.txt": 1000, "1d_data/x_coreshell_4.txt": 1000,
    "convertible_files/Z83000.xml": 121, "convertible_files/Z98000.xml": 140,
    "magnetic_data/S50_15kG_horizSector_RF+.txt": 105, "magnetic_data/S50_15kG_horizSector_RF-.txt": 105,
    "magnetic_data/S50_15kG_vertSector_RF+.txt": 100, "magnetic_data/S50_15kG_vertSector_RF-.txt": 100,
    "reflectometry_data/NR_Ni_down_state.txt": 270, "reflectometry_data/NR_Ni_up_state.txt": 270,
    # refused, with the cause
    "1d_data/CoreXY_ShellZ.txt": "has 7 column(s)",  # a coordinate/SLD table
    "1d_data/PolySpheres.txt": "line 1: q must be positive",  # a '0 0 0' row that sasdata drops
    "1d_data/beam profile.DAT": "line 6: q must be positive",  # a beam profile from q = 0
    "1d_data/latex_smeared.xml": "[curve index 0 of 2]: q must increase strictly",  # SANS with a repeated q
    "1d_data/testdata_line.txt": "line 4: q must be positive",  # a straight line from x = 0
    "1d_data/testdata_line3.txt": "line 4: q must be positive",
    "convertible_files/APS_X.TXT": "1 column(s)", "convertible_files/APS_Y.TXT": "1 column(s)",
    "convertible_files/FIT2D_I.TXT": "1 column(s)", "convertible_files/FIT2D_Q.TXT": "1 column(s)",
    "convertible_files/LMOG_100254_merged_ISIS2D.txt": "8 column(s)",
    "convertible_files/YBCO_12685__ISIS2D.txt": "8 column(s)",
    "dls_data/dls_monodisperse.dat": "of small-angle scattering",  # delay time, not q
    "dls_data/dls_polydisperse.dat": "of small-angle scattering",
    "other_files/dist _THETA_weights.txt": "line 1: q must be positive",
    "other_files/phi_weights.txt": "line 1: q must be positive",
    "other_files/radius_dist.txt": "line 3: q must increase strictly",
    "other_files/theta_weights.txt": "line 1: q must be positive",
    "other_formats/1000A_sphere_sm.xml": "not valid canSAS XML",  # dQl without its unit
    "magnetic_data/S50_I+_2D.dat": "holds 2D data", "magnetic_data/S50_I-_2D.dat": "holds 2D data",
    "magnetic_data/S50_unpol_2D.dat": "holds 2D data",
}
CAUSES = {"2d_data": "holds 2D data", "image_data": "no 1D curve that sasdata can read",
          "sesans_data": "holds SESANS data", "convertible_files": "no 1D curve that sasdata can read"}
# for a file not classified above (a later sasdata may ship more): any of the loader's causes
ANY_CAUSE = re.compile(r"column|not a number|non-finite|q must|negative|block|sasdata|2D data|SESANS|"
                       r"q unit|small-angle|index|empty")


def _key(path):
    return f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize("path", io.example_files(), ids=_key)
def test_every_sasdata_example_loads_or_names_its_cause(path):
    expected = EXAMPLES.get(_key(path), CAUSES.get(path.parent.name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # APS_DND-CAT's columns 3-4, tested below
        try:
            c = io.load_curve(path)
        except ValueError as exc:
            message = str(exc)
            assert path.name in message and not isinstance(expected, int), message
            cause = message.split(path.name, 1)[1]
            assert (expected in cause) if expected else ANY_CAUSE.search(cause), message
            return
    assert expected in (None, len(c)) and len(c) > 10
    assert np.all(np.isfinite(c.q_nm)) and np.all(np.diff(c.q_nm) > 0) and np.all(np.isfinite(c.intensity))
    assert io.Q_RANGE_NM[0] <= c.q_nm[0] and c.q_nm[-1] <= io.Q_RANGE_NM[1]


def test_apoferritin_header_is_a_preamble_not_data():
    from sasdata.dataloader.loader import Loader

    path = io.example_path("apoferritin.txt")
    (reference,) = Loader().load(str(path))  # sasdata's own reading: 395 points
    c = io.load_curve(path)
    assert len(c) == len(reference.x) == 395
    np.testing.assert_allclose(c.q_nm, np.asarray(reference.x) * 10)  # A^-1 -> nm^-1
    np.testing.assert_allclose(c.intensity, reference.y)
    assert c.meta["data_lines"] == (6, 400)  # after '395 0 0 0 1 395 0', '0 0 0 0', '3 (F12.5,2E16.6)'
    assert c.q_nm[0] == pytest.approx(0.055) and c.q_nm[-1] == pytest.approx(3.995)
    assert c.intensity_unit == "a.u."  # a text file declares no intensity unit


BLOCK = "".join(f"{0.01 * k:.2f} {1.0 / k:.4f} {0.01 / k:.5f}\n" for k in range(1, 13))  # 12 rows, 3 columns


@pytest.mark.parametrize("header", ["12\n", "12 3\n", "# run 7\n0 0 0 0 0 0 0\n12\n"])
def test_numeric_header_lines_before_the_block_are_a_preamble(tmp_path, header):
    c = io.load_curve(write(tmp_path, "header.txt", header + BLOCK))
    n_header = header.count("\n")
    assert len(c) == 12 and c.meta["data_lines"] == (n_header + 1, n_header + 12)
    np.testing.assert_allclose(c.q_nm, 0.1 * np.arange(1, 13))


def _lines(text):
    return text.splitlines(keepends=True)


@pytest.mark.parametrize("edit, match", [
    (lambda rows: rows[:7] + ["0.08 0.1250\n"] + rows[8:], "line 9 has 2 columns"),  # ragged, late
    (lambda rows: rows[:2] + ["0.03 0.3333\n"] + rows[3:], "line 4 has 2 columns inside the data block"),
    (lambda rows: rows[:7] + ["0.08 0.1250 0.00125 7\n"] + rows[8:], "line 9 has 4 columns"),
    (lambda rows: rows[:5] + ["0.06 nan 0.00167\n"] + rows[6:], r"line 7, column 2: non-finite value 'nan'"),
    (lambda rows: rows[:5] + ["0.06 inf 0.00167\n"] + rows[6:], r"line 7, column 2: non-finite"),
    (lambda rows: rows[:5] + ["0.06 N/A 0.00167\n"] + rows[6:], r"line 7: 'N/A' is not a number"),
    (lambda rows: rows[:5] + ["0.045 0.1667 0.00167\n"] + rows[6:],
     r"line 7: q must increase strictly, but q=0.045 at line 7 is below q=0.05 at line 6"),
    (lambda rows: rows[:5] + ["0.05 0.1667 0.00167\n"] + rows[6:], r"line 7: q must increase strictly.*repeats"),
    (lambda rows: rows[::-1], r"line 3: q must increase strictly"),
    (lambda rows: rows[:5] + ["0.06 0.1667 -0.00167\n"] + rows[6:], r"line 7: the uncertainty dI .* negative"),
])
def test_bad_rows_inside_the_block_are_refused_naming_the_line(tmp_path, edit, match):
    text = "q I dI\n" + "".join(edit(_lines(BLOCK)))  # data from line 2
    with pytest.raises(ValueError, match=match) as info:
        io.load_curve(write(tmp_path, "bad.txt", text))
    assert "bad.txt" in str(info.value)


def test_two_blocks_or_a_disagreement_with_sasdata_are_refused(tmp_path):
    with pytest.raises(ValueError, match="more than one block of numeric rows"):
        io.load_curve(write(tmp_path, "two.txt", BLOCK + "# second sample\n" + BLOCK))
    # a 5-row, 5-column numeric header: sasdata takes it for the data, the scan takes the long block
    header = "".join(f"{k} 1 2 3 4\n" for k in range(1, 6)) + "settings above\n"
    with pytest.raises(ValueError, match="sasdata read 5 points but the data block .* holds 12"):
        io.load_curve(write(tmp_path, "ambiguous.txt", header + BLOCK))


def test_q_unit_named_in_a_text_header(tmp_path):
    c = io.load_curve(write(tmp_path, "nm.txt", "q (1/nm)  I (a.u.)  dI\n" + BLOCK))
    np.testing.assert_allclose(c.q_nm, 0.01 * np.arange(1, 13))
    assert c.meta["q_unit_in_file"] == "1/nm" and c.meta["q_unit_source"].startswith("header")
    c = io.load_curve(write(tmp_path, "a.txt", "# Q (Angstrom^-1), I (1/cm)\n" + BLOCK))
    np.testing.assert_allclose(c.q_nm, 0.1 * np.arange(1, 13))
    both = write(tmp_path, "both.txt", "q in nm^-1\ndq in 1/A\n" + BLOCK)
    with pytest.raises(ValueError, match="both.txt: the header names q in nm\\^-1 .* pass q_unit"):
        io.load_curve(both)
    assert io.load_curve(both, q_unit="1/nm").q_nm[-1] == pytest.approx(0.12)


def test_multi_curve_file_index_selects_one():
    path = io.example_path("latex_smeared.xml")  # SANS (index 0) and slit-smeared USANS (index 1)
    usans = io.load_curve(path, index=1)
    assert len(usans) == 82 and usans.meta["n_curves_in_file"] == 2
    assert usans.dq_nm is None and np.allclose(usans.meta["slit_length_nm"], 1.17)  # 0.117 A^-1
    with pytest.raises(ValueError, match=r"latex_smeared.xml: index=2 is out of range: the file holds 2 1D curve"):
        io.load_curve(path, index=2)
    with pytest.raises(ValueError, match=r"\[curve index 0 of 2\]: q must increase strictly.*repeats"):
        io.load_curve(path, index=0)


def test_columns_that_are_no_dI_dq_are_dropped_with_a_warning():
    # APS_DND-CAT.TXT: columns 3 and 4 are both proportional to I (30 to 8e5 times q in column 4)
    with pytest.warns(UserWarning, match="APS_DND-CAT.TXT: ignored columns 3-4"):
        c = io.load_curve(io.example_path("APS_DND-CAT.TXT"))
    assert c.sigma is None and c.dq_nm is None and "no q resolution" in c.meta["ignored"]


def test_units_and_resolution_of_example_formats():
    pdh = io.load_curve(io.example_path("Anton-Paar.pdh"))
    assert pdh.meta["q_unit_source"] == "PDH convention" and pdh.intensity_unit == "a.u."
    assert pdh.q_nm[0] == pytest.approx(0.06604)  # the file's number, nm^-1
    nist = io.load_curve(io.example_path("1umSlitSmearSphere.ABS"))  # NIST USANS, 6 columns
    assert nist.intensity_unit == "cm^{-1}" and nist.dq_nm is None
    assert np.allclose(nist.meta["slit_length_nm"], 1.17) and nist.q_nm[0] == pytest.approx(0.001)
    xml = io.load_curve(io.example_path("ISIS_Polymer_Blend_RT2.xml"))
    assert xml.intensity_unit == "cm^{-1}" and np.all(xml.dq_nm < xml.q_nm)
    with pytest.raises(ValueError, match="sphere_isis.ses: holds SESANS data"):
        io.load_curve(io.example_path("sesans_data/sphere_isis.ses"))
    with pytest.raises(ValueError, match="dls_monodisperse.dat: q spans .* outside .* small-angle"):
        io.load_curve(io.example_path("dls_data/dls_monodisperse.dat"), q_unit="1/nm")


def test_validate_curve_refuses_negative_sigma():
    with pytest.raises(ValueError, match="sigma must not be negative"):
        io.validate_curve([1, 2, 3], [1, 1, 1], [0.1, -0.1, 0.1])
