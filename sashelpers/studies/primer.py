"""Chapter 00, the scattering primer: a voxel sphere by FFT against the analytic sphere.

This chapter has no paper: its reference values are known answers (the sphere's first minimum at
qR = 4.4934, the Porod slope -4), listed in ``HEADLINES``.
"""

from __future__ import annotations

from ..core import profiles
from ..core.report import Headline

STUDY = "00_scattering_primer"

#: Profile sizes (quick: CI; standard: a laptop; paper: a workstation). A voxel sphere of
#: radius_nm on an n^3 grid of voxel_nm, FFT and radial average onto n_q points, against the
#: analytic sphere; bar_max_rel_dev: the largest relative deviation the notebook accepts between
#: the FFT curve and the analytic curve averaged with the same q weights.
SIZES = {
    "quick": {"n": 96, "voxel_nm": 0.6, "radius_nm": 8.0, "n_q": 150, "bar_max_rel_dev": 0.01},
    "standard": {"n": 160, "voxel_nm": 0.4, "radius_nm": 8.0, "n_q": 250, "bar_max_rel_dev": 0.004},
    "paper": {"n": 256, "voxel_nm": 0.25, "radius_nm": 8.0, "n_q": 400, "bar_max_rel_dev": 0.002},
}


def profile_sizes(profile: str | None = None) -> dict:
    """This chapter's sizes at ``profile`` (default: the current one), a copy of ``SIZES[profile]``."""
    return profiles.pick(SIZES, profile)


#: Known answers the notebook holds its run against.
HEADLINES = (
    Headline("fft_vs_analytic_max_rel_dev", "FFT vs analytic sphere, largest relative deviation", "%", 100,
             ("<=", 0.01), 0.0, "exact: both are the same curve"),
    Headline("first_minimum_qR", "first minimum of the sphere, qR", "", 1.0, ("in", 4.4914, 4.4954),
             4.493409, "tan x = x"),
    Headline("porod_slope_pd10", "Porod slope, 10 % polydisperse spheres", "", 1.0, ("in", -4.1, -3.9),
             -4.0, "Porod's law"),
)
