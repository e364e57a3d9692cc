"""sashelpers: kernels, datasets, models and reports for the SAS-ML book.

Modules (one concern each): backend, profiles, datasets, saxs, scatterers, gisaxs, noise, io, report,
plotting.
Import them explicitly, e.g. ``from sashelpers import saxs``.
"""

__version__ = "0.1.0"
