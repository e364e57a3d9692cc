"""Study 3 pipeline: profile table, confusion matrix, a tiny end-to-end clean run."""

import numpy as np
import pytest
import torch

from sashelpers.studies import gisaxs_cnn as study
from sashelpers.core import profiles


def test_profile_entries_are_complete():
    keys = {"image_size", "supersample", "n_orient", "n_train", "n_test", "chunk_size", "seed", "net", "width",
            "hidden", "dropout", "epochs", "batch_size", "lr", "patience", "bar_accuracy",
            "aug_epochs", "per_condition", "per_condition_epochs", "n_reps1_per_class",
            "bar_augmented_worst", "bar_augmented_mean"}
    for name in profiles.PROFILES:
        sizes = study.profile_sizes(name)
        assert keys <= set(sizes), (name, keys - set(sizes))
        assert 1 / 7 < sizes["bar_accuracy"] <= 1
        worst = sizes["bar_augmented_worst"]
        assert worst is None or 0 <= worst <= sizes["bar_augmented_mean"], (name, worst)
        assert 1 / 7 < sizes["bar_augmented_mean"] <= 1
        assert set(sizes["per_condition"]) <= set(study.CONDITIONS)
        assert sizes["per_condition_epochs"] is None or sizes["per_condition_epochs"] >= 1
        study.data_config(sizes)  # validates
        study.build_model(sizes)


def test_confusion_matrix():
    cm = study.confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    with pytest.raises(ValueError, match="same shape"):
        study.confusion_matrix([0, 1], [0])


def test_tiny_clean_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SASHELPERS_CACHE", str(tmp_path))
    tiny = {"image_size": 16, "supersample": 1, "n_orient": 4, "n_train": 70, "n_test": 14, "chunk_size": 35,
            "seed": 0, "net": "small", "width": 4, "hidden": 8, "dropout": 0.0, "epochs": 2, "batch_size": 32,
            "lr": 1e-3, "patience": 2, "bar_accuracy": 0.5, "aug_epochs": 1,
            "per_condition": ["gauss_0.5"]}
    monkeypatch.setitem(study.SIZES, "quick", tiny)
    run = study.run_clean("quick", workers=1, progress=False)
    assert run.confusion.sum() == 14 and run.confusion.shape == (7, 7)
    assert 0 <= run.accuracy <= 1 and set(run.recall) == set(study.gisaxs.CLASS_NAMES)
    assert run.test_probs.shape == (14, 7)
    assert run.timings["generated_images"] == 84 and run.timings["epochs"] == 2
    again = study.load_data("quick", workers=1, progress=False)  # now cached
    assert again["timings"]["generated_images"] == 0
    np.testing.assert_array_equal(again["test"]["images"], run.test_images)

    noisy = study.run_noise(run, again, progress=False)
    assert set(noisy.clean_model_on) == set(noisy.augmented_model_on) == set(study.CONDITIONS)
    assert noisy.clean_model_on["clean"] == pytest.approx(run.accuracy)
    assert all(0 <= v <= 1 for v in noisy.augmented_model_on.values())
    assert set(noisy.per_condition) == {"clean", "gauss_0.5"}
    n_fit = 70 - max(7, 70 // 10)
    assert noisy.train_conditions.shape == (n_fit,) and noisy.augmented_history.train_loss
    assert noisy.augmented_worst[1] == min(noisy.augmented_model_on.values())

    # both models were kept; reuse=True loads them (same weights, no training), reuse=False trains
    assert study.model_path("clean", run.sizes).with_suffix(".pt").exists()
    kept = study.run_clean("quick", workers=1, progress=False, data=again, reuse=True)
    assert kept.timings["epochs"] == 0 and kept.timings["clean_loaded_from"].endswith(".pt")
    for a, b in zip(run.model.state_dict().values(), kept.model.state_dict().values()):
        assert torch.equal(a, b)
    assert kept.accuracy == pytest.approx(run.accuracy)
    model, history, _, timings = study.train_augmented(kept, again, progress=False, reuse=True)
    assert timings["epochs_augmented"] == 0 and not history.train_loss
    for a, b in zip(noisy.augmented_model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    # the augmented model's key includes the weights it started from
    other = study.build_model(run.sizes)
    assert study.model_path("augmented", run.sizes, other) != study.model_path("augmented", run.sizes, run.model)
    with pytest.raises(ValueError, match="kind"):
        study.model_path("noisy", run.sizes)


def test_profiles_know_the_noise_conditions():
    for name in ("standard", "paper"):
        assert study.SIZES[name]["per_condition"] == list(study.CONDITIONS[1:])
    assert set(study.PAPER_TRAINED_ON) == set(study.CONDITIONS)


def test_fixed_reps_set_and_accuracy_by_reps():
    sizes = {**study.profile_sizes("quick"), "image_size": 16, "n_orient": 3}
    data = study.fixed_reps_set(sizes, 1, 1, seed=5)
    assert data["images"].shape == (7, 16, 16)
    assert (data["reps"] == 1).all()  # a single cell: the cap never binds
    assert np.isfinite(data["images"]).all()

    class Always0(torch.nn.Module):  # predicts class 0 for every image
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor([1.0, 0, 0, 0, 0, 0, 0]))

        def forward(self, x):
            return self.bias.expand(len(x), 7)

    reps = np.array([[1, 1, 1], [1, 1, 1], [3, 3, 2], [3, 3, 2], [15, 15, 9]])
    rows = study.accuracy_by_reps(Always0(), np.zeros((5, 16, 16), np.float32), [0, 1, 0, 0, 2], reps)
    assert [(r["lo"], r["n"]) for r in rows] == [(1, 2), (2, 2), (12, 1)]
    assert [r["accuracy"] for r in rows] == [0.5, 1.0, 0.0]
    assert rows[0]["stderr"] == pytest.approx(0.5 / np.sqrt(2))
    with pytest.raises(ValueError, match="differ in length"):
        study.accuracy_by_reps(Always0(), np.zeros((4, 16, 16), np.float32), [0, 1, 0, 0, 2], reps)
    with pytest.raises(ValueError, match="reps"):
        study.fixed_reps_set(sizes, 0, 1, seed=5)


def test_build_model_is_seeded():
    sizes = study.profile_sizes("quick")
    a = study.build_model(sizes)
    torch.rand(10)  # whatever ran before must not matter
    b = study.build_model(sizes)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = study.build_model({**sizes, "seed": sizes["seed"] + 1})
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
