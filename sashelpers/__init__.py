"""sashelpers: kernels, datasets, models and reports for the SAS-ML book.

Modules (one concern each):
- foundation: backend, profiles, datasets, report, plotting, io
- physics kernels: saxs (FFT SAXS), scatterers (analytic curves), grf (porous media),
  gisaxs (superlattice GISAXS), noise (measurement models)
- models: training (the one torch loop), nets (CNNs), inn (conditional INNs), regress (XGBoost)
- study glue: grf_ml (study 2), gisaxs_study (study 3)
- measured images: detector (detector image -> q -> the model's grid), ood (out-of-distribution scores)

Import them explicitly, e.g. ``from sashelpers import saxs``.
"""

__version__ = "0.1.0"
