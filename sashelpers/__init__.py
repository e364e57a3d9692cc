"""sashelpers: kernels, datasets, models and reports for the SAS-ML book.

Modules (one concern each): backend, profiles, datasets, saxs, scatterers, gisaxs, noise, nets,
training, io, report, plotting; study pipelines: gisaxs_study (study 3).
Import them explicitly, e.g. ``from sashelpers import saxs``.
"""

__version__ = "0.1.0"
