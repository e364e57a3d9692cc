"""Scattering kernels: formulas with known-answer tests, no priors, datasets or paper numbers.

- ``scatterers``: sasmodels in nm and the same polydisperse curves batched in torch
- ``saxs``: SAXS of a voxel density by FFT, radial average, the analytic sphere
- ``grf``: porous media from Gaussian random fields, photon-counting noise
- ``gisaxs``: DWBA GISAXS of finite superlattices on a substrate
- ``noise``: detector effects on images (smear, Gaussian, Poisson, resolution)
- ``diffuse``: Monte Carlo of 2D binary lattices with short-range order, diffuse intensity
"""
