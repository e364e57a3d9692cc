import numpy as np
import pytest
import torch

from sashelpers.learn import training


def make_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.5], dtype=np.float32) + 0.3)[:, None] + 0.01 * rng.normal(size=(n, 1)).astype(np.float32)
    return x, y


def mse(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def small_model():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


def test_fit_learns_a_linear_map_and_restores_the_best_weights():
    x, y = make_data()
    model = small_model()
    cfg = training.TrainConfig(epochs=60, batch_size=32, lr=0.05, progress=False)
    hist = training.fit(model, mse, (x[:200], y[:200]), (x[200:], y[200:]), cfg, device="cpu")
    assert hist.val_loss[0] > 10 * hist.best_val_loss
    assert hist.best_val_loss < 1e-3
    val = training.evaluate(model, mse, training.as_tensors((x[200:], y[200:])))
    assert val == pytest.approx(hist.best_val_loss, rel=1e-5)  # the best epoch's weights are back


def test_early_stopping_stops_a_run_that_no_longer_improves():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = rng.normal(size=(64, 1)).astype(np.float32)  # pure noise: validation cannot improve for long
    cfg = training.TrainConfig(epochs=200, batch_size=16, lr=0.01, patience=5, progress=False)
    hist = training.fit(small_model(), mse, (x[:32], y[:32]), (x[32:], y[32:]), cfg, device="cpu")
    assert hist.stopped_early and len(hist.val_loss) < 200
    assert len(hist.val_loss) - 1 - hist.best_epoch == 5


def test_interrupted_training_resumes_to_the_same_result(tmp_path):
    x, y = make_data()
    cfg = training.TrainConfig(epochs=12, batch_size=32, lr=0.02, progress=False)
    full = small_model()
    training.fit(full, mse, (x[:200], y[:200]), (x[200:], y[200:]), cfg, device="cpu")

    ckpt = tmp_path / "run.ckpt"
    calls = {"n": 0}

    def interrupting_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 7 * 7 + 1:  # 7 batches per epoch: stop inside epoch 8
            raise KeyboardInterrupt
        return mse(model, batch)

    part = small_model()
    with pytest.raises(KeyboardInterrupt):
        training.fit(part, interrupting_loss, (x[:200], y[:200]), (x[200:], y[200:]), cfg, device="cpu",
                     checkpoint=ckpt)
    assert ckpt.exists()
    resumed = small_model()
    hist = training.fit(resumed, mse, (x[:200], y[:200]), (x[200:], y[200:]), cfg, device="cpu", checkpoint=ckpt)
    assert len(hist.val_loss) == 12
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_save_and_load_round_trip(tmp_path):
    model = small_model()
    path = training.save_model(tmp_path / "m", model, {"kind": "linear", "inputs": 3})
    other = torch.nn.Linear(3, 1)
    card = training.load_model(path, other)
    assert card["kind"] == "linear" and "torch" in card["versions"]
    torch.testing.assert_close(other.weight, model.weight)
    with pytest.raises(ValueError, match="no saved model"):
        training.load_model(tmp_path / "missing", other)


@pytest.mark.parametrize("kwargs, match", [({"epochs": 0}, "epochs"), ({"lr": 0}, "lr"),
                                           ({"scheduler_factor": 1.5}, "scheduler_factor")])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        training.TrainConfig(**kwargs)
