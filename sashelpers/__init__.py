"""sashelpers: kernels, datasets, models and reports for the SAS-ML book.

Layers, each importing only from the layers above it in this list (a test enforces it):

- ``core``: backend, profiles, datasets, report, plotting, checks
- ``physics``: scatterers, saxs, grf, gisaxs, noise (kernels)
- ``measured``: io, detector (real files and detector geometry)
- ``learn``: training, nets, inn, regress, ood (generic models)
- ``studies``: one module per study (nothing imports them)

Import modules explicitly, e.g. ``from sashelpers.physics import saxs``.
"""

__version__ = "0.1.0"
