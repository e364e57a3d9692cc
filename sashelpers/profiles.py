"""One table of sizes per study and profile.

``quick`` runs in CI (<= 3 min per notebook on 2 cores), ``standard`` on a laptop
(<= 10 min with datasets cached), ``paper`` on a GPU workstation at the papers' sizes.
Each entry also holds the bar the notebook's final check cell asserts for that profile.
"""

from __future__ import annotations

import copy
import os

PROFILES = ("quick", "standard", "paper")
_ENV = "SASHELPERS_PROFILE"
# study 3's noise conditions other than "clean" (gisaxs_study.CONDITIONS[1:]; a test keeps them equal)
CONDITIONS_NOISY = ("smear_0.5", "smear_1.0", "gauss_0.1", "gauss_0.2", "gauss_0.5", "gauss_1.0", "poisson",
                    "res_100", "res_75", "res_50", "res_25")

SIZES: dict[str, dict[str, dict]] = {
    # Primer: voxel sphere -> FFT -> radial average vs the analytic sphere.
    # radius 8 nm; grid n voxels of voxel_nm; the bar is on the max relative deviation
    # between the FFT curve and the analytic curve averaged with the same q weights.
    "00_scattering_primer": {
        "quick": {"n": 96, "voxel_nm": 0.6, "radius_nm": 8.0, "n_q": 150, "bar_max_rel_dev": 0.01},
        "standard": {"n": 160, "voxel_nm": 0.4, "radius_nm": 8.0, "n_q": 250, "bar_max_rel_dev": 0.004},
        "paper": {"n": 256, "voxel_nm": 0.25, "radius_nm": 8.0, "n_q": 400, "bar_max_rel_dev": 0.002},
    },
    # Study 1: curves per shape, network size, training length; bars for shape accuracy (the final
    # verdict, network + likelihood where unsure), sphere radius MAE (nm) and the range every
    # parameter's 90 % interval coverage must fall in. classifier_extra_per_shape: further curves
    # (another seed) for the shape classifier only; the INNs train on n_per_shape. refine_below:
    # curves whose top network probability is lower are decided by the likelihood
    # (ShapeInverter.classify; ~1-2 s per curve on one core).
    # Measured (2 CPU cores, 2026-11-21), shape accuracy network alone / final: quick 97.8 / 100 %
    # (180 test curves, 15 deferred); standard 99.00 / 99.93 % (53 of 1500 deferred), sphere radius
    # MAE 0.010 nm, coverage 0.86-0.95; paper 99.20 / 99.93 % (43 deferred), 0.008 nm, 0.86-0.91.
    # Before the extra curves and the second opinion the network alone reached 98.4 / 98.6 %, while
    # the Bayes classifier (sashelpers.ambiguity) erred on 0 of the 1500 standard test curves.
    "01_inn_analytic_scatterers": {
        "quick": {"n_per_shape": 600, "seed": 0, "hidden": 64, "n_blocks": 4, "epochs": 15, "lr": 3e-3, "patience": 5,
                  "classifier_extra_per_shape": 2400, "refine_below": 0.9,
                  "n_samples": 100, "baseline_trees": 100,
                  "bar_accuracy": 0.9, "bar_sphere_radius_mae_nm": 0.6, "bar_coverage": (0.5, 1.0)},
        "standard": {"n_per_shape": 5000, "seed": 0, "hidden": 128, "n_blocks": 6, "epochs": 60, "lr": 1e-3, "patience": 10,
                     "classifier_extra_per_shape": 20000, "refine_below": 0.9,
                     "n_samples": 300, "baseline_trees": 200,
                     "bar_accuracy": 0.99, "bar_sphere_radius_mae_nm": 0.05, "bar_coverage": (0.8, 0.97)},
        "paper": {"n_per_shape": 5000, "seed": 0, "hidden": 256, "n_blocks": 8, "epochs": 200, "lr": 1e-3, "patience": 20,
                  "classifier_extra_per_shape": 20000, "refine_below": 0.9,
                  "n_samples": 1000, "baseline_trees": 1000,
                  "bar_accuracy": 0.99, "bar_sphere_radius_mae_nm": 0.05, "bar_coverage": (0.85, 0.95)},
    },
    # Study 3 (Liu et al.): 7 superlattice classes from GISAXS images (gisaxs.dataset_chunk).
    # image_size^2 images simulated on a supersample^2 finer grid with n_orient grains; n_train
    # (last 10 % validation) and n_test images, balanced over the classes; the bar is on the
    # clean test accuracy (chance is 1/7 = 0.143). Noise study: the noise-augmented model is
    # fine-tuned from the clean one for aug_epochs on aug_copies noisy copies of the training set;
    # per_condition lists the conditions that get a model of their own (the paper's Tables II/III),
    # the augmented model fine-tuned on that condition for per_condition_epochs (None: trained
    # from scratch, as the paper); standard with 4 epochs from the clean model took 366 s (loaded)
    # and stayed below the augmented model on every condition;
    # n_reps1_per_class: images per class of the single-cell (N = 1) set of the crystal-size figure;
    # bar_augmented_worst / _mean are on the augmented model's worst condition / mean over conditions
    # (measured worst/mean: quick 0.19-0.31 / 0.55-0.61 at 32 px, where res_25 leaves 6 px and
    # sits near chance, so quick has no worst-condition bar (None); standard 0.42-0.47 / 0.72-0.78;
    # paper: the goal, not yet run).
    "03_gisaxs_cnn_noise": {
        "quick": {"image_size": 32, "supersample": 2, "n_orient": 30, "n_train": 1400, "n_test": 350,
                  "chunk_size": 50, "seed": 3, "net": "alexnet", "width": 16, "hidden": 128, "dropout": 0.3,
                  "epochs": 30, "batch_size": 64, "lr": 1e-3, "patience": 8, "bar_accuracy": 0.5,
                  "aug_epochs": 20, "aug_copies": 2, "per_condition": ["gauss_1.0", "res_50"], "per_condition_epochs": 2,
                  "n_reps1_per_class": 5, "bar_augmented_worst": None, "bar_augmented_mean": 0.45},
        "standard": {"image_size": 64, "supersample": 2, "n_orient": 30, "n_train": 2100, "n_test": 700,
                     "chunk_size": 70, "seed": 3, "net": "alexnet", "width": 16, "hidden": 128, "dropout": 0.3,
                     "epochs": 40, "batch_size": 64, "lr": 1e-3, "patience": 8, "bar_accuracy": 0.75,
                     "aug_epochs": 20, "aug_copies": 2, "per_condition": list(CONDITIONS_NOISY), "per_condition_epochs": 2,
                     "n_reps1_per_class": 20, "bar_augmented_worst": 0.30, "bar_augmented_mean": 0.65},
        "paper": {"image_size": 125, "supersample": 1, "n_orient": 60, "n_train": 21000, "n_test": 3500,
                  "chunk_size": 250, "seed": 3, "net": "alexnet", "width": 32, "hidden": 256, "dropout": 0.5,
                  "epochs": 100, "batch_size": 128, "lr": 1e-3, "patience": 12, "bar_accuracy": 0.95,
                  "aug_epochs": 50, "aug_copies": 2, "per_condition": list(CONDITIONS_NOISY), "per_condition_epochs": None,
                  "n_reps1_per_class": 100,
                  "bar_augmented_worst": 0.95, "bar_augmented_mean": 0.95},
    },
    # Study 2: GRF porous media -> FFT SAXS -> XGBoost (Roding et al. 2022). Four datasets
    # (two/three-phase x low/high porosity) of n_samples each, split train/val/test by index;
    # "xgb" holds the XGBoost hyperparameters (the paper's at paper scale, scaled down for a
    # laptop: more learning rate, fewer trees, larger row/column subsamples for small data).
    # Bars: quick -- every test MAPE below bar_mape_vs_mean x the MAPE of predicting the training
    # mean; learning_sizes: the learning curve's smaller training sets (the full one is added);
    # standard -- test MAPE per parameter below bar_mape (%), case-study means within
    # bar_case_bias of the truth, 5-95 % interval coverage within bar_coverage.
    "02_grf_porous_xgboost": {
        "quick": {
            "n": 64, "voxel_nm": 0.5, "q_min_nm": 0.3, "q_max_nm": 3.0, "n_q": 100,
            "n_samples": 800, "split": [0.7, 0.15, 0.15], "n_replicates": 100,
            "learning_sizes": [70, 140, 280],
            "xgb": {"learning_rate": 0.1, "max_depth": 6, "min_child_weight": 3, "subsample": 0.8,
                    "colsample_bytree": 0.5, "reg_lambda": 0.2, "max_bin": 128,
                    "n_estimators": 300, "early_stopping_rounds": 30},
            "bar_mape_vs_mean": 0.85, "bar_coverage": [0.6, 1.0],
        },
        "standard": {
            "n": 128, "voxel_nm": 0.5, "q_min_nm": 0.15, "q_max_nm": 3.0, "n_q": 200,
            "n_samples": 2500, "split": [0.8, 0.1, 0.1], "n_replicates": 200,
            "learning_sizes": [250, 500, 1000],
            "xgb": {"learning_rate": 0.05, "max_depth": 6, "min_child_weight": 3, "subsample": 0.6,
                    "colsample_bytree": 0.3, "reg_lambda": 0.2, "max_bin": 256,
                    "n_estimators": 1500, "early_stopping_rounds": 50},
            # measured 2026-11-21 (test MAPE %): a 5.0-6.5, eps 8.0-27.1, nu 10.9-18.3; case-study
            # bias a 1.7 %, eps 2.6 %, nu 8.5 %; mean coverage (conformalised) see the notebook
            "bar_mape": {"a_nm": 9.0, "porosity": 35.0, "nu": 25.0}, "bar_case_bias": 0.15,
            "bar_coverage": [0.8, 0.97],
        },
        "paper": {
            "n": 512, "voxel_nm": 0.5, "q_min_nm": 0.04, "q_max_nm": 3.0, "n_q": 500,
            "n_samples": 2**19 * 10 // 8, "split": [0.8, 0.1, 0.1], "n_replicates": 500,
            "learning_sizes": [2**13, 2**15, 2**17],
            "xgb": {"learning_rate": 0.005, "max_depth": 15, "min_child_weight": 3, "subsample": 0.15,
                    "colsample_bytree": 0.15, "reg_lambda": 0.2, "max_bin": 1024,
                    "n_estimators": 50000, "early_stopping_rounds": 1000},
            "bar_mape": {"a_nm": 1.5, "porosity": 6.0, "nu": 4.0}, "bar_case_bias": 0.02,
            "bar_coverage": [0.85, 0.95],
        },
    },
}


def current_profile(profile: str | None = None) -> str:
    """The profile name: the argument, else ``SASHELPERS_PROFILE``, else 'standard'."""
    name = profile if profile is not None else os.environ.get(_ENV, "standard")
    name = str(name).strip().lower()
    if name not in PROFILES:
        raise ValueError(f"profile={name!r} is not a profile; allowed: {', '.join(PROFILES)}")
    return name


def get(study: str, profile: str | None = None) -> dict:
    """A copy of the size table of ``study`` for ``profile`` (default: the current one)."""
    if study not in SIZES:
        raise ValueError(f"study={study!r} has no size table; known: {', '.join(sorted(SIZES))}")
    return copy.deepcopy(SIZES[study][current_profile(profile)])
