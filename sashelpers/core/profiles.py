"""Profiles: one notebook, three sizes.

``quick`` runs in CI (<= 3 min per notebook on 2 cores), ``standard`` on a laptop
(<= 10 min with datasets cached), ``paper`` on a GPU workstation at the papers' sizes.
Each study module (``sashelpers.studies``) holds its own ``SIZES`` table, one entry per
profile, including the bars the notebook's final check cell asserts for that profile;
``pick`` returns the entry of the current profile.
"""

from __future__ import annotations

import copy
import os

PROFILES = ("quick", "standard", "paper")
_ENV = "SASHELPERS_PROFILE"


def current_profile(profile: str | None = None) -> str:
    """The profile name: the argument, else ``SASHELPERS_PROFILE``, else 'standard'."""
    name = profile if profile is not None else os.environ.get(_ENV, "standard")
    name = str(name).strip().lower()
    if name not in PROFILES:
        raise ValueError(f"profile={name!r} is not a profile; allowed: {', '.join(PROFILES)}")
    return name


def pick(sizes: dict, profile: str | None = None) -> dict:
    """A copy of ``sizes[profile]`` (default: the current profile) from a study's size table.

    Parameters
    ----------
    sizes : dict
        {profile name: dict of sizes}, with an entry for every name in ``PROFILES``.
    profile : str, optional
        'quick', 'standard' or 'paper'; default ``current_profile()``.
    """
    missing = [p for p in PROFILES if p not in sizes]
    if missing:
        raise ValueError(f"the size table has no entry for profile(s) {missing}; it needs {', '.join(PROFILES)}")
    return copy.deepcopy(sizes[current_profile(profile)])
