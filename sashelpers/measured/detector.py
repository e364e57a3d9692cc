"""Measured GISAXS detector images: read them, map pixels to q, bin them onto the model's q grid.

Units: lengths on the detector in mm, positions in pixels, wavelength in nm, angles in degrees,
q in nm^-1. Images are float64 (rows, cols) with rows increasing **upward** (as
``gisaxs.DetectorGrid``), masked pixels NaN.

Beam position convention (``DetectorGeometry``): pixel-edge coordinates from the lower-left
detector corner, as in BornAgain's ``RectangularDetector``: pixel (row i, col j) spans
[i, i+1] x [j, j+1] and its centre is at (i + 0.5, j + 0.5). ``detector_grid`` converts to the
pixel-centre indices of ``gisaxs.DetectorGrid`` (subtract 0.5).

``galaxi_example()`` is the GALAXI image of Ag nanoparticles in ``data/real/galaxi`` (its README
has the provenance and licence); ``to_model_grid`` averages any such image into the square
(``|q_y|``, q_z) bins of the study-3 training images.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..physics import gisaxs
from ..core import checks

# --- geometry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorGeometry:
    """A flat detector perpendicular to the direct beam (see the module docstring for the pixel
    convention of beam_col_px / beam_row_px). shape: (n_rows, n_cols) of the image, or None."""

    wavelength_nm: float
    alpha_i_deg: float
    distance_mm: float
    pixel_mm: float
    beam_col_px: float
    beam_row_px: float
    shape: tuple[int, int] | None = None

    @property
    def energy_kev(self) -> float:
        """E = h c / lambda in keV."""
        return gisaxs.HC_KEV_NM / self.wavelength_nm

    @property
    def k_nm(self) -> float:
        """k = 2 pi / lambda in nm^-1."""
        return 2 * math.pi / self.wavelength_nm


_GEOMETRY_KEYS = ("wavelength_nm", "alpha_i_deg", "distance_mm", "pixel_mm", "beam_col_px", "beam_row_px")


def check_geometry(geometry) -> DetectorGeometry:
    """A validated DetectorGeometry from a DetectorGeometry or a dict with the keys of
    ``geometry.json`` (wavelength_nm, alpha_i_deg, distance_mm, pixel_mm, beam_col_px,
    beam_row_px; optional n_rows, n_cols). ValueError names the bad entry."""
    if isinstance(geometry, DetectorGeometry):
        values = {k: getattr(geometry, k) for k in _GEOMETRY_KEYS}
        shape = geometry.shape
    elif isinstance(geometry, dict):
        missing = [k for k in _GEOMETRY_KEYS if k not in geometry]
        if missing:
            raise ValueError(f"geometry lacks {missing}; needs {', '.join(_GEOMETRY_KEYS)}")
        values = {k: geometry[k] for k in _GEOMETRY_KEYS}
        shape = (geometry["n_rows"], geometry["n_cols"]) if "n_rows" in geometry and "n_cols" in geometry else None
    else:
        raise ValueError(f"geometry must be a DetectorGeometry or a dict, got {type(geometry).__name__}")
    for k, v in values.items():
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"geometry {k}={values[k]!r} must be a number") from None
        if not math.isfinite(v):
            raise ValueError(f"geometry {k}={v!r} must be finite")
        values[k] = v
    for k, hi in (("wavelength_nm", 100.0), ("distance_mm", 1e5), ("pixel_mm", 10.0)):
        if not 0 < values[k] <= hi:
            raise ValueError(f"geometry {k}={values[k]!r} must lie in (0, {hi:g}]")
    if not 0 < values["alpha_i_deg"] <= 10:
        raise ValueError(f"geometry alpha_i_deg={values['alpha_i_deg']!r} must lie in (0, 10] degrees")
    if shape is not None:
        shape = _check_shape(shape)
    return DetectorGeometry(**values, shape=shape)


def _check_shape(shape) -> tuple[int, int]:
    try:
        r, c = (int(s) for s in shape)
        ok = (r, c) == tuple(shape) and r >= 2 and c >= 2
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"shape={shape!r} must be (n_rows, n_cols), two integers >= 2")
    return r, c


def detector_grid(shape, geometry) -> gisaxs.DetectorGrid:
    """The ``gisaxs.DetectorGrid`` of an image of ``shape`` (rows, cols): the beam position is
    converted from pixel-edge coordinates to pixel-centre indices (minus 0.5)."""
    geo = check_geometry(geometry)
    n_rows, n_cols = _check_shape(shape)
    if geo.shape is not None and geo.shape != (n_rows, n_cols):
        raise ValueError(f"image shape {(n_rows, n_cols)} does not match the geometry's {geo.shape}")
    return gisaxs.detector_grid(n_rows, n_cols, geo.pixel_mm, geo.distance_mm,
                                geo.beam_row_px - 0.5, geo.beam_col_px - 0.5)


def pixel_q(shape, geometry):
    """(q_y, q_z, valid) at every pixel centre of an image of ``shape``: float64 (rows, cols) in
    nm^-1 (q = k_f - k_i, q_y > 0 to the right of the beam) and valid = above the sample horizon
    (alpha_f > 0). Energy E[keV] = 1.23984198 / lambda[nm]."""
    geo = check_geometry(geometry)
    g = gisaxs.scattering_geometry(detector_grid(shape, geo), geo.alpha_i_deg, energy_kev=geo.energy_kev, xp=np)
    return np.asarray(g.qy_nm), np.asarray(g.qz_nm), np.asarray(g.valid)


def _q_to_pixel(qy, qz, geo: DetectorGeometry, shape):
    """Inverse of ``pixel_q``: the nearest pixel (row, col) of q points, -1 where off the detector
    or unreachable (below the horizon, outside the Ewald sphere)."""
    k, a_i = geo.k_nm, math.radians(geo.alpha_i_deg)
    sin_af = qz / k - math.sin(a_i)
    ok = (sin_af > 0) & (sin_af < 1)
    a_f = np.arcsin(np.clip(sin_af, 0, 1))
    sin_tt = qy / (k * np.cos(a_f))
    ok &= np.abs(sin_tt) < 1
    tt = np.arcsin(np.clip(sin_tt, -1, 1))
    x = geo.distance_mm * np.tan(tt)
    y = np.sqrt(geo.distance_mm**2 + x * x) * np.tan(a_f + a_i)
    col = np.rint(geo.beam_col_px - 0.5 + x / geo.pixel_mm)
    row = np.rint(geo.beam_row_px - 0.5 + y / geo.pixel_mm)
    ok &= (row >= 0) & (row < shape[0]) & (col >= 0) & (col < shape[1])
    return np.where(ok, row, -1).astype(np.int64), np.where(ok, col, -1).astype(np.int64)


# --- binning onto the model grid -----------------------------------------------------------------


def _check_image(image) -> np.ndarray:
    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 2 or min(a.shape) < 2:
        raise ValueError(f"image has shape {a.shape}; expected a 2D (rows, cols) array, rows upward")
    return a


def to_model_grid(image, geometry, image_size: int, qy_range_nm=(0.0, 2.0), qz_range_nm=(0.0, 2.0),
                  n_sub: int = 8):
    """Average a detector image into the model's image_size^2 square q bins.

    Bin edges: image_size equal steps over ``|q_y|`` in qy_range_nm (columns) and q_z in qz_range_nm
    (rows, q_z increasing along axis 0), as the study-3 training images. Both halves of the
    detector are folded (``|q_y|``): the training images cover q_y >= 0 only and the grain average
    is symmetric in q_y. A pixel counts when it is finite (NaN = masked) and above the horizon;
    its centre's q decides its bin.

    Returns (intensity, coverage), float64 (image_size, image_size):
    intensity: mean of the pixels in each bin (detector units), 0 where no pixel falls;
    coverage: fraction of the bin's q area seen by a counted pixel on either side of the beam,
    from n_sub x n_sub points per bin mapped back to the nearest pixel (0 below the horizon, in
    gaps and masks, off the detector). With pixels coarser than the bins a bin can be partly
    covered but hold no pixel centre (intensity 0).
    ValueError for a non-2D image, a bad geometry or range, or a window with no counted pixel.
    """
    a = _check_image(image)
    geo = check_geometry(geometry)
    if int(image_size) != image_size or not 2 <= image_size <= 4096:
        raise ValueError(f"image_size={image_size!r} must be an integer in [2, 4096]")
    if int(n_sub) != n_sub or not 1 <= n_sub <= 64:
        raise ValueError(f"n_sub={n_sub!r} must be an integer in [1, 64]")
    n = int(image_size)
    (y0, y1), (z0, z1) = (checks.pair(k, r, 0.0, 50.0, unit="nm^-1 (q_y is folded to |q_y|, q_z is above the horizon)")
                          for k, r in (("qy_range_nm", qy_range_nm), ("qz_range_nm", qz_range_nm)))
    qy, qz, valid = pixel_q(a.shape, geo)
    good = valid & np.isfinite(a)
    iy = np.floor((np.abs(qy) - y0) / (y1 - y0) * n).astype(np.int64)
    iz = np.floor((qz - z0) / (z1 - z0) * n).astype(np.int64)
    use = good & (iy >= 0) & (iy < n) & (iz >= 0) & (iz < n)
    if not use.any():
        span = lambda v: f"[{v.min():.3g}, {v.max():.3g}]" if v.size else "nothing"  # noqa: E731
        raise ValueError(f"no valid detector pixel falls in the q window |q_y| in {qy_range_nm}, q_z in "
                         f"{qz_range_nm} nm^-1; the detector's valid pixels reach |q_y| in {span(np.abs(qy[good]))}, "
                         f"q_z in {span(qz[good])} nm^-1")
    flat = iz[use] * n + iy[use]
    counts = np.bincount(flat, minlength=n * n)
    sums = np.bincount(flat, weights=a[use], minlength=n * n)
    intensity = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).reshape(n, n)
    return intensity, _coverage(good, geo, n, (y0, y1), (z0, z1), int(n_sub))


def _coverage(good, geo, n, qy_range, qz_range, n_sub):
    """Fraction of n_sub^2 points per bin whose nearest pixel (at +q_y or -q_y) is counted."""
    (y0, y1), (z0, z1) = qy_range, qz_range
    m = n * n_sub
    qy = y0 + (np.arange(m) + 0.5) * (y1 - y0) / m
    qz = z0 + (np.arange(m) + 0.5) * (z1 - z0) / m
    QZ, QY = np.meshgrid(qz, qy, indexing="ij")
    seen = np.zeros(QY.shape, dtype=bool)
    for sign in (1.0, -1.0):
        row, col = _q_to_pixel(sign * QY, QZ, geo, good.shape)
        hit = row >= 0
        seen[hit] |= good[row[hit], col[hit]]
    return seen.reshape(n, n_sub, n, n_sub).mean(axis=(1, 3))


# --- reading files -------------------------------------------------------------------------------

_TIFF_TYPES = {3: "H", 4: "I"}  # SHORT, LONG: the only tag types we need


def read_tiff_int32(path) -> np.ndarray:
    """The pixels of an uncompressed single-image 32-bit integer TIFF (e.g. PILATUS), as stored:
    int32 (or uint32) (rows, cols), first stored row first (the TOP of a PILATUS image).
    ``.gz`` files are decompressed. ValueError for anything else (compression, float, RGB...)."""
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if raw[:4] not in (b"II*\x00", b"MM\x00*"):
        raise ValueError(f"{path.name}: not a TIFF file (header {raw[:4]!r})")
    bo = "<" if raw[:2] == b"II" else ">"
    (ifd,) = struct.unpack(bo + "I", raw[4:8])
    (n_tags,) = struct.unpack(bo + "H", raw[ifd:ifd + 2])
    tags = {}
    for i in range(n_tags):
        tag, typ, count = struct.unpack(bo + "HHI", raw[ifd + 2 + 12 * i:ifd + 10 + 12 * i])
        if typ not in _TIFF_TYPES:
            continue
        size = struct.calcsize(_TIFF_TYPES[typ])
        where = ifd + 10 + 12 * i
        if size * count > 4:
            (where,) = struct.unpack(bo + "I", raw[where:where + 4])
        tags[tag] = struct.unpack(bo + _TIFF_TYPES[typ] * count, raw[where:where + size * count])
    width, height = tags[256][0], tags[257][0]
    bits, compression = tags.get(258, (1,))[0], tags.get(259, (1,))[0]
    samples, sample_format = tags.get(277, (1,))[0], tags.get(339, (1,))[0]
    if bits != 32 or compression != 1 or samples != 1 or sample_format not in (1, 2):
        raise ValueError(f"{path.name}: only uncompressed single-channel 32-bit integer TIFF is read here "
                         f"(bits {bits}, compression {compression}, samples {samples}, sample format {sample_format})")
    data = b"".join(raw[o:o + c] for o, c in zip(tags[273], tags[279]))
    if len(data) != 4 * width * height:
        raise ValueError(f"{path.name}: {len(data)} pixel bytes for {width} x {height} 32-bit pixels")
    dtype = np.dtype(("i4" if sample_format == 2 else "u4")).newbyteorder(bo)
    return np.frombuffer(data, dtype=dtype).reshape(height, width).astype(dtype.newbyteorder("="))


def load_pilatus_tiff(path) -> np.ndarray:
    """A PILATUS TIFF as float64 (rows, cols) with rows increasing upward (the stored rows
    flipped) and negative pixels (gaps, dead pixels: -1) as NaN."""
    a = read_tiff_int32(path)[::-1].astype(np.float64)
    a[a < 0] = np.nan
    return a


def mask_rectangle(image, col_range_px, row_range_px) -> np.ndarray:
    """A copy of ``image`` with NaN at the pixels whose centre (j + 0.5, i + 0.5) lies in the
    rectangle given in pixel-edge coordinates (rows upward)."""
    a = np.array(_check_image(image), dtype=np.float64)
    cols = np.arange(a.shape[1]) + 0.5
    rows = np.arange(a.shape[0]) + 0.5
    inside = ((rows >= row_range_px[0]) & (rows <= row_range_px[1]))[:, None] \
        & ((cols >= col_range_px[0]) & (cols <= col_range_px[1]))[None, :]
    a[inside] = np.nan
    return a


# --- the GALAXI example ----------------------------------------------------------------------------


@dataclass
class Measurement:
    """A measured detector image: float64 (rows, cols), rows upward, masked pixels NaN."""

    image: np.ndarray
    geometry: DetectorGeometry
    provenance: dict = field(default_factory=dict)


def galaxi_dir() -> Path:
    """data/real/galaxi in the book's root."""
    from ..core.datasets import repo_root

    return repo_root() / "data" / "real" / "galaxi"


def galaxi_example(mask_specular: bool = True) -> Measurement:
    """The GALAXI GISAXS image of Ag nanoparticles (data/real/galaxi, GPL-3.0+, see its README).

    981 x 1043 PILATUS 1M pixels (photon counts in 1800 s), rows upward, the module gap (-1 in
    the file) NaN. mask_specular: also NaN over the specular reflection (the rectangle the
    BornAgain example leaves out of its fit), which our simulator does not model and which is
    ~100x brighter than the diffuse scattering. The file's sha256 is checked.
    """
    folder = galaxi_dir()
    meta = json.loads((folder / "geometry.json").read_text())
    path = folder / meta["file"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != meta["sha256"]:
        raise ValueError(f"{path} has sha256 {digest}, expected {meta['sha256']} (geometry.json)")
    image = load_pilatus_tiff(path)
    geometry = check_geometry(meta)
    if image.shape != geometry.shape:
        raise ValueError(f"{path.name} has shape {image.shape}, geometry.json says {geometry.shape}")
    if mask_specular:
        box = meta["specular_mask_px"]
        image = mask_rectangle(image, box["col"], box["row"])
    provenance = {k: meta[k] for k in ("file", "sha256", "source", "licence", "pixel_convention")}
    provenance["path"] = str(path)
    return Measurement(image, geometry, provenance)


# --- figure ---------------------------------------------------------------------------------------


def q_extent(shape, geometry) -> tuple[float, float, float, float]:
    """(q_y left, q_y right, q_z bottom, q_z top) of the outer pixel edges along the beam's row
    and column, nm^-1: an ``imshow`` extent (the flat-detector map is linear to < 0.5 % here)."""
    geo = check_geometry(geometry)
    n_rows, n_cols = _check_shape(shape)
    k, a_i, d = geo.k_nm, math.radians(geo.alpha_i_deg), geo.distance_mm
    x = (np.array([0.0, n_cols]) - geo.beam_col_px) * geo.pixel_mm
    y = (np.array([0.0, n_rows]) - geo.beam_row_px) * geo.pixel_mm
    qy = k * np.sin(np.arctan(x / d))
    qz = k * (np.sin(np.arctan(y / d) - a_i) + math.sin(a_i))
    return float(qy[0]), float(qy[1]), float(qz[0]), float(qz[1])


def plot_measurement(ax, image, geometry, *, title: str = ""):
    """log10 of a detector image on q axes (``q_extent``), rows upward, masked pixels blank;
    pixels <= 0 (no counts) are drawn at half the smallest positive value. Returns the image."""
    a = _check_image(image)
    positive = a[np.isfinite(a) & (a > 0)]
    if positive.size == 0:
        raise ValueError("image has no positive pixel to show on a log scale")
    shown = np.log10(np.clip(a, 0.5 * positive.min(), None))
    im = ax.imshow(shown, origin="lower", extent=q_extent(a.shape, geometry), cmap="viridis",
                   interpolation="nearest", aspect="equal")
    ax.set(xlabel=r"$q_y$ (nm$^{-1}$)", ylabel=r"$q_z$ (nm$^{-1}$)", title=title)
    ax.grid(False)
    return im
