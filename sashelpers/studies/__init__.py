"""One module per study: its priors and dataset glue, profile sizes, the paper's numbers with their
source, headline metrics, and the notebook's long steps. Nothing in the package imports them.

- ``primer``: chapter 00, a sphere by FFT vs the analytic curve (known answers, no paper)
- ``inn_scatterers``: study 1, shape and size from 1D curves with a classifier + conditional INNs
- ``bayes_shapes``: study 1's likelihood (Bayes) classifier, the ceiling and second opinion
- ``grf_porous``: study 2, porous media from Gaussian random fields, FFT SAXS, XGBoost
- ``gisaxs_cnn``: study 3, 7 superlattice classes from GISAXS images with a CNN
- ``gisaxs_dae``: study 4, a denoising autoencoder on study 3's images: denoise, name the noise, bin a series
- ``diffuse_cnn``: study 5, short-range-order correlations from diffuse-scattering images with a CNN
"""
