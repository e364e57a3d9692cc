"""CNN classifiers for scattering images."""

import numpy as np
import pytest
import torch

from sashelpers.learn import nets
from sashelpers.learn.training import TrainConfig, fit


@pytest.mark.parametrize("cls", [nets.AlexNetCNN, nets.SmallCNN, nets.ResNetCNN])
@pytest.mark.parametrize("size", [16, 32, 48, 64, 125])
def test_shapes(cls, size):
    m = cls(size, 7).eval()
    x = torch.rand(3, 1, size, size)
    assert m(x).shape == (3, 7)
    assert m(x[:, 0]).shape == (3, 7)  # (B, H, W) is accepted for one channel
    feats = m.features(x)
    assert feats.shape == (3, m.config["hidden"])
    torch.testing.assert_close(m.classifier(feats), m(x))


def test_parameter_counts():
    # conv 1*32*25+32, 32*64*9+64, 64*128*9+128, 128*128*9+128, 128*64*9+64; fc 64*16*256+256, 256*256+256, 256*7+7
    expected = (832 + 18496 + 73856 + 147584 + 73792) + (262400 + 65792 + 1799)
    assert nets.AlexNetCNN(64).n_parameters() == expected == 644551
    # conv 1*16*9+16, 16*32*9+32; fc 32*16*64+64, 64*7+7
    assert nets.SmallCNN(64).n_parameters() == 160 + 4640 + 32832 + 455 == 38087
    assert nets.AlexNetCNN(32, width=8, hidden=32).n_parameters() < 60_000


@pytest.mark.parametrize("name", ["alexnet", "small", "resnet"])
def test_overfits_a_tiny_batch(name, one_thread):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((14, 1, 16, 16)).astype(np.float32)
    y = np.arange(14) % 7
    model = nets.build(name, image_size=16, n_classes=7, width=8, hidden=32, dropout=0.0)
    fit(model, nets.classification_loss, (x, y), (x, y),
        TrainConfig(epochs=80, batch_size=14, lr=3e-3, patience=80, progress=False), device="cpu")
    acc = (nets.predict(model, x).argmax(1).numpy() == y).mean()
    assert acc == 1.0


@pytest.mark.parametrize("x, word", [
    (torch.zeros(2, 1, 16, 17), "shape"), (torch.zeros(2, 2, 16, 16), "shape"), (torch.zeros(16, 16), "shape"),
    (torch.zeros(2, 16, 16, dtype=torch.long), "floating"), (np.zeros((2, 16, 16)), "torch.Tensor"),
])
def test_input_validation(x, word):
    with pytest.raises(ValueError, match=word):
        nets.AlexNetCNN(16)(x)


@pytest.mark.parametrize("kwargs, word", [
    ({"image_size": 4}, "image_size"), ({"image_size": 32.5}, "image_size"), ({"n_classes": 1}, "n_classes"),
    ({"dropout": 1.0}, "dropout"), ({"width": 0}, "width"), ({"hidden": "a"}, "hidden"),
])
def test_constructor_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        nets.AlexNetCNN(**{"image_size": 16, **kwargs})
    with pytest.raises(ValueError, match="name"):
        nets.build("vgg")


def test_input_transforms_known_values():
    decades = 6.0
    lin = torch.tensor([[[1.0, 1e-3, 1e-5, 0.0]]])  # 1e-6 and below are stored as 0
    x = torch.where(lin > 0, 1 + torch.log10(lin.clamp_min(1e-30)) / decades, torch.zeros_like(lin))
    torch.testing.assert_close(nets.InputTransform("log")(x), x)
    torch.testing.assert_close(nets.InputTransform("sqrt")(x), lin.sqrt(), rtol=1e-5, atol=1e-7)
    a = nets.InputTransform("asinh", asinh_scale=1e-3)(x)
    want = torch.asinh(lin / 1e-3) / torch.asinh(torch.tensor(1e3))
    torch.testing.assert_close(a, want, rtol=1e-5, atol=1e-7)
    assert a[0, 0, 0] == pytest.approx(1.0) and a[0, 0, 3] == 0.0
    # log_floor: on white noise of sigma 1e-2 of the peak, the 6-decade log lifts the background to
    # ~0.6 of the scale; the floor at 3 sigma of the noise keeps it near 0
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    clean = np.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / 20.0)
    noisy = np.clip(clean + rng.normal(0, 1e-2, clean.shape), 0, None)
    enc = torch.tensor(np.clip(1 + np.log10(np.maximum(noisy / noisy.max(), 1e-30)) / 6, 0, 1),
                       dtype=torch.float32)[None]
    out = nets.InputTransform("log_floor")(enc)
    background = torch.tensor(clean < 1e-3)
    assert float(out.max()) == pytest.approx(1.0)
    assert float(out[0][background].mean()) < 0.02 and float(enc[0][background].mean()) > 0.2
    with pytest.raises(ValueError, match="input_transform"):
        nets.ResNetCNN(16, input_transform="log10")
    assert nets.ResNetCNN(16, input_transform="asinh").config["input_transform"] == "asinh"


def test_regression_cnn_sizes_and_scale():
    from sashelpers.learn.nets import RegressionCNN

    small, large = RegressionCNN(64, 15, bin=2, hidden=400), RegressionCNN(64, 15, bin=2, width=64, hidden=3400)
    assert 0.19e6 < small.n_parameters() < 0.23e6 and 7.0e6 < large.n_parameters() < 7.4e6  # the slides' two nets
    torch.manual_seed(0)
    net = RegressionCNN(32, 3, bin=2).eval()
    x = torch.rand(4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(250.0 * x))  # divided by its own mean: scale-free
    with pytest.raises(ValueError, match="expected"):
        net(torch.rand(2, 16, 16))
    with pytest.raises(ValueError, match="multiple of 8 x bin"):
        RegressionCNN(40, 3, bin=2)
