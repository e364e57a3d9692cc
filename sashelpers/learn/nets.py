"""Convolutional networks for scattering images (studies 3-5).

* ``AlexNetCNN``: an AlexNet-style classifier (Krizhevsky et al. 2012, as used by Liu et al. for
  GISAXS) adapted to small single-channel images: five conv layers (5x5, then 3x3) with ReLU in
  three stages, each stage followed by 2x2 max-pooling while the feature map is larger than
  4 px, then two fully connected hidden layers with dropout and a linear output.
  ``features(x)`` returns the last hidden layer (for a PCA as in the paper).
* ``SmallCNN``: two conv stages and one hidden layer, a fast baseline.
* ``ResNetCNN``: residual blocks with batch normalisation and global average pooling (He et al.
  2016): few parameters, no large fully connected layers, trains stably at high learning rates.
* ``DenoisingAutoencoder``: encoder -> latent vector -> decoder for images in [0, 1], optionally
  with skip connections (U-Net style) from the encoder to the decoder; ``encode`` gives the
  latent code. Train on (noisy, clean) pairs with ``denoising_loss``.

All take (B, H, W) or (B, C, H, W) float tensors of the size they were built for and return
logits (B, n_classes); train with ``torch.nn.functional.cross_entropy``.

Inputs are log-normalised images, x = 1 + log10(I / I_max) / decades clipped to [0, 1] (the way
the GISAXS images are stored). ``InputTransform`` (built into every net, ``input_transform=``)
re-encodes them inside the network: "log" keeps x; "asinh" is asinh(I / (s I_max)) / asinh(1/s)
(linear below s of the peak, logarithmic above, so faint background noise stays near 0);
"sqrt" is sqrt(I / I_max); "log_floor" is a log whose floor is set per image from its own noise
level (3 robust standard deviations of the pixel-to-pixel differences, at least 10^-decades).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core import checks


TRANSFORMS = ("log", "asinh", "sqrt", "log_floor")


class InputTransform(nn.Module):
    """Log-normalised images -> the network's input representation (see the module docstring)."""

    def __init__(self, kind: str = "log", *, decades: float = 6.0, asinh_scale: float = 1e-3):
        super().__init__()
        self.kind = checks.one_of("input_transform", kind, TRANSFORMS)
        self.decades = checks.positive("decades", decades, 30.0)
        self.asinh_scale = checks.positive("asinh_scale", asinh_scale, 1.0)

    def forward(self, x):
        if self.kind == "log":
            return x
        lin = torch.where(x > 0, torch.pow(10.0, self.decades * (x - 1.0)), torch.zeros_like(x))
        if self.kind == "sqrt":
            return torch.sqrt(lin)
        if self.kind == "asinh":
            s = self.asinh_scale
            return torch.asinh(lin / s) / float(torch.asinh(torch.tensor(1.0 / s)))
        # log_floor: noise sigma from the median absolute pixel-to-pixel difference (robust to peaks)
        diff = (lin[..., :, 1:] - lin[..., :, :-1]).abs().flatten(start_dim=-2)
        sigma = diff.median(dim=-1).values / (0.6745 * 2**0.5)
        floor = torch.clamp(3.0 * sigma, min=10.0 ** -self.decades, max=0.1)[..., None, None]
        return (torch.log10(torch.maximum(lin, floor)) - torch.log10(floor)) / (-torch.log10(floor))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class _ImageNet(nn.Module):
    """Shared input handling: size, channels and finite values are checked on every call."""

    image_size: int
    in_channels: int

    def _setup(self, image_size, n_classes, in_channels, width, hidden, dropout,
               input_transform: str = "log") -> tuple[int, int, float]:
        """Validate the shared constructor arguments and record them; return (width, hidden, dropout)."""
        super().__init__()
        self.input_transform = InputTransform(input_transform)
        self.image_size = checks.integer("image_size", image_size, 8, 1024)
        self.n_classes = checks.integer("n_classes", n_classes, 2, 10_000)
        self.in_channels = checks.integer("in_channels", in_channels, 1, 64)
        width = checks.integer("width", width, 1, 1024)
        hidden = checks.integer("hidden", hidden, 1, 65_536)
        dropout = checks.number("dropout", dropout, 0.0, 1.0, hi_open=True)
        self.config = {"image_size": self.image_size, "n_classes": self.n_classes, "in_channels": self.in_channels,
                       "width": width, "hidden": hidden, "dropout": dropout, "input_transform": input_transform}
        return width, hidden, dropout

    def features(self, x) -> torch.Tensor:
        """The last hidden layer (batch, hidden): the input of the final linear layer."""
        return self.hidden(self.conv(self.input_transform(self._prepare(x))))

    def _prepare(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 3 and self.in_channels == 1:
            x = x.unsqueeze(1)
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected (batch, {', '.join(map(str, expected))})"
                             + (" or (batch, H, W)" if self.in_channels == 1 else ""))
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating tensor, got dtype {x.dtype}")
        return x

    def forward(self, x):
        return self.classifier(self.features(x))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class AlexNetCNN(_ImageNet):
    """AlexNet-style CNN for square single-channel images of ``image_size`` pixels.

    Stages (channels ``width``, 2 ``width``, 4 ``width``): conv5x5-ReLU; conv3x3-ReLU;
    3 x conv3x3-ReLU (the last at 2 ``width``, as AlexNet narrows before the classifier).
    A 2x2 max-pool follows a stage while the map is larger than 4 px; an adaptive average pool
    then brings it to at most 4x4. Classifier: dropout-FC(hidden)-ReLU-dropout-FC(hidden)-ReLU
    (= ``features``) then FC(n_classes).
    """

    def __init__(self, image_size: int = 64, n_classes: int = 7, *, in_channels: int = 1, width: int = 32,
                 hidden: int = 256, dropout: float = 0.5, input_transform: str = "log"):
        width, hidden, dropout = self._setup(image_size, n_classes, in_channels, width, hidden, dropout,
                                             input_transform)
        w1, w2, w3 = width, 2 * width, 4 * width
        size = self.image_size
        layers: list[nn.Module] = []

        def stage(convs, size):
            layers.extend(convs)
            if size > 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            return size

        size = stage([nn.Conv2d(self.in_channels, w1, 5, padding=2), nn.ReLU(inplace=True)], size)
        size = stage([nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU(inplace=True)], size)
        size = stage([nn.Conv2d(w2, w3, 3, padding=1), nn.ReLU(inplace=True),
                      nn.Conv2d(w3, w3, 3, padding=1), nn.ReLU(inplace=True),
                      nn.Conv2d(w3, w2, 3, padding=1), nn.ReLU(inplace=True)], size)
        out = min(4, size)
        layers.append(nn.AdaptiveAvgPool2d(out))
        self.conv = nn.Sequential(*layers)
        self.hidden = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(w2 * out * out, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(hidden, self.n_classes)


class SmallCNN(_ImageNet):
    """A small CNN: conv3x3(width)-ReLU-pool, conv3x3(2 width)-ReLU-pool, adaptive pool to <= 4x4,
    FC(hidden)-ReLU (= ``features``), dropout, FC(n_classes)."""

    def __init__(self, image_size: int = 64, n_classes: int = 7, *, in_channels: int = 1, width: int = 16,
                 hidden: int = 64, dropout: float = 0.25, input_transform: str = "log"):
        width, hidden, dropout = self._setup(image_size, n_classes, in_channels, width, hidden, dropout,
                                             input_transform)
        out = min(4, self.image_size // 4)
        self.conv = nn.Sequential(
            nn.Conv2d(self.in_channels, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(out))
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * out * out, hidden), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, self.n_classes))


class _Residual(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the input (a 1x1 conv-BN where stride or width change), ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class ResNetCNN(_ImageNet):
    """A small residual network: a conv3x3(width)-BN-ReLU stem, then stages of two residual
    blocks at width, 2 width, 4 width (each later stage halves the map), global average pooling,
    FC(hidden)-ReLU (= ``features``), dropout, FC(n_classes)."""

    def __init__(self, image_size: int = 64, n_classes: int = 7, *, in_channels: int = 1, width: int = 16,
                 hidden: int = 128, dropout: float = 0.2, input_transform: str = "log"):
        width, hidden, dropout = self._setup(image_size, n_classes, in_channels, width, hidden, dropout,
                                             input_transform)
        stem_stride = 2 if self.image_size >= 64 else 1
        layers: list[nn.Module] = [nn.Conv2d(self.in_channels, width, 3, stride=stem_stride, padding=1, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        c = width
        for k, c_out in enumerate((width, 2 * width, 4 * width)):
            layers += [_Residual(c, c_out, 1 if k == 0 else 2), _Residual(c_out, c_out, 1)]
            c = c_out
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.conv = nn.Sequential(*layers)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(c, hidden), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, self.n_classes))


def _one_channel(x, image_size: int) -> torch.Tensor:
    """Images (batch, S, S) or (batch, 1, S, S) as a floating (batch, 1, S, S) tensor; ValueError otherwise."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("x must be a floating torch.Tensor of images (batch, H, W) or (batch, 1, H, W)")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, image_size, image_size):
        raise ValueError(f"x has shape {tuple(x.shape)}; expected (batch, {image_size}, {image_size})")
    return x


class RegressionCNN(nn.Module):
    """A CNN from a non-negative intensity image to ``n_out`` real numbers (study 5).

    The image is divided by its own mean first (so an unknown absolute scale does not matter),
    optionally log-compressed (``log=True``: log(1 + I / mean)), optionally binned ``bin`` x ``bin``
    (a cheap first step: averaging neighbouring pixels of I(h) keeps the short-range
    correlations almost unchanged), then [conv3x3 - ReLU - average pool 2] x 3 with width, 2 width, 2 width channels, flattened,
    FC(hidden) - ReLU - FC(n_out). Average (not max) pooling keeps the network close to the
    linear map that relates a clean image to its correlations (see study 5). On 64 px, width 16
    and hidden 96 give about 0.21 M parameters without binning; with ``bin=2``, hidden 400 gives
    0.22 M and width 64 with hidden 3400 about 7.2 M.
    """

    def __init__(self, image_size: int = 64, n_out: int = 3, *, width: int = 16, hidden: int = 96,
                 log: bool = False, bin: int = 1):
        super().__init__()
        self.image_size = checks.integer("image_size", image_size, 8, 1024)
        self.bin = checks.integer("bin", bin, 1, 16)
        if self.image_size % (8 * self.bin):
            raise ValueError(f"image_size={image_size} must be a multiple of 8 x bin = {8 * self.bin} "
                             "(binning, then three 2x poolings)")
        self.n_out = checks.integer("n_out", n_out, 1, 10_000)
        width = checks.integer("width", width, 1, 1024)
        hidden = checks.integer("hidden", hidden, 1, 65_536)
        self.log = bool(log)
        self.config = {"image_size": self.image_size, "n_out": self.n_out, "width": width, "hidden": hidden,
                       "log": self.log, "bin": self.bin}
        w2, side = 2 * width, self.image_size // (8 * self.bin)
        self.conv = nn.Sequential(
            nn.AvgPool2d(self.bin) if self.bin > 1 else nn.Identity(),
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(inplace=True), nn.AvgPool2d(2),
            nn.Conv2d(width, w2, 3, padding=1), nn.ReLU(inplace=True), nn.AvgPool2d(2),
            nn.Conv2d(w2, w2, 3, padding=1), nn.ReLU(inplace=True), nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(w2 * side * side, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, self.n_out))

    def forward(self, x):
        x = _one_channel(x, self.image_size)
        x = x / torch.clamp(x.mean(dim=(-2, -1), keepdim=True), min=1e-30)
        if self.log:
            x = torch.log1p(torch.clamp(x, min=0.0))
        return self.head(self.conv(x))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def regression_loss(model: nn.Module, batch) -> torch.Tensor:
    """Mean squared error of ``model(x)`` against targets y, for ``training.fit``."""
    x, y = batch
    return nn.functional.mse_loss(model(x), y.float())


class DenoisingAutoencoder(nn.Module):
    """Convolutional autoencoder for square single-channel images in [0, 1].

    Encoder: three stride-2 conv3x3-BN-ReLU stages (width, 2 width, 4 width channels), then a
    linear map of the (image_size/8)^2 feature map to ``latent`` numbers (``encode``). Decoder: the
    mirror image with transposed convolutions and a sigmoid output. With ``skips`` the decoder
    also receives each encoder stage's features (concatenated), which keeps fine detail but lets
    the image bypass the latent code. ``image_size`` must be a multiple of 8.

    With ``aux_outputs`` > 0 the network also holds a linear read-out (``read_out``) of
    ``aux_outputs`` numbers from the first ``aux_latent`` numbers of the code, trained together
    with the reconstruction (e.g. to name the noise an image carries, so that this part of the
    code has to keep that information instead of discarding it).
    """

    def __init__(self, image_size: int = 64, *, width: int = 16, latent: int = 64, skips: bool = False,
                 aux_outputs: int = 0, aux_latent: int = 0):
        super().__init__()
        self.image_size = checks.integer("image_size", image_size, 8, 1024)
        if self.image_size % 8:
            raise ValueError(f"image_size={image_size!r} must be a multiple of 8")
        width = checks.integer("width", width, 1, 512)
        self.latent = checks.integer("latent", latent, 1, 65_536)
        self.skips = bool(skips)
        self.aux_outputs = checks.integer("aux_outputs", aux_outputs, 0, 65_536)
        self.aux_latent = checks.integer("aux_latent", aux_latent, 1 if self.aux_outputs else 0, self.latent)
        self.config = {"image_size": self.image_size, "width": width, "latent": self.latent, "skips": self.skips,
                       "aux_outputs": self.aux_outputs, "aux_latent": self.aux_latent}
        self.aux = nn.Linear(self.aux_latent, self.aux_outputs) if self.aux_outputs else None
        chans = (1, width, 2 * width, 4 * width)

        def down(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                                 nn.ReLU(inplace=True))

        def up(c_in, c_out):
            return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                                 nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

        self.down = nn.ModuleList(down(chans[k], chans[k + 1]) for k in range(3))
        side = self.image_size // 8
        self._side = side
        self.to_latent = nn.Linear(chans[3] * side * side, self.latent)
        self.from_latent = nn.Sequential(nn.Linear(self.latent, chans[3] * side * side), nn.ReLU(inplace=True))
        extra = 2 if self.skips else 1  # concatenated encoder features double the input channels
        self.up = nn.ModuleList([up(chans[3] * extra, chans[2]), up(chans[2] * extra, chans[1]),
                                 up(chans[1] * extra, width)])
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def _prepare(self, x) -> torch.Tensor:
        return _one_channel(x, self.image_size)

    def _encode(self, x):
        feats = []
        h = self._prepare(x)
        for stage in self.down:
            h = stage(h)
            feats.append(h)
        return self.to_latent(h.flatten(1)), feats

    def encode(self, x) -> torch.Tensor:
        """The latent code (batch, latent)."""
        return self._encode(x)[0]

    def decode_with_code(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoised images (batch, S, S) and their codes (batch, latent), in one pass."""
        z, feats = self._encode(x)
        h = self.from_latent(z).view(-1, self.down[-1][0].out_channels, self._side, self._side)
        for stage, f in zip(self.up, reversed(feats)):
            h = stage(torch.cat([h, f], dim=1) if self.skips else h)
        return torch.sigmoid(self.out(h)).squeeze(1), z

    def forward(self, x) -> torch.Tensor:
        return self.decode_with_code(x)[0]

    def read_out(self, z) -> torch.Tensor:
        """The auxiliary outputs (batch, aux_outputs) of codes z (batch, latent)."""
        if self.aux is None:
            raise ValueError("this network has no auxiliary read-out (aux_outputs=0)")
        return self.aux(z[:, :self.aux_latent])

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def denoising_loss(model: nn.Module, batch) -> torch.Tensor:
    """Mean squared error of ``model(noisy)`` against the clean images, for ``training.fit``."""
    noisy, clean = batch
    return nn.functional.mse_loss(model(noisy), clean)


def build(name: str, **kwargs) -> nn.Module:
    """A network by name: 'alexnet', 'resnet' or 'small'."""
    nets = {"alexnet": AlexNetCNN, "resnet": ResNetCNN, "small": SmallCNN}
    if name not in nets:
        raise ValueError(f"name={name!r} is not a network; allowed: {', '.join(nets)}")
    return nets[name](**kwargs)


def classification_loss(model: nn.Module, batch) -> torch.Tensor:
    """Cross-entropy of ``model(x)`` against integer labels y, for ``training.fit``."""
    x, y = batch
    return nn.functional.cross_entropy(model(x), y.long())


@torch.no_grad()
def logits(model: nn.Module, x, batch_size: int = 512) -> torch.Tensor:
    """Raw outputs (N, n_classes) for images x (array or tensor, (N, S, S) or (N, 1, S, S)), in eval
    mode, batched on the model's device, returned on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(x).float()
    out = [model(x[s:s + batch_size].to(device)).cpu() for s in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, getattr(model, "n_classes", 0))


def predict(model: nn.Module, x, batch_size: int = 512) -> torch.Tensor:
    """Class probabilities (N, n_classes): the softmax of ``logits``."""
    return torch.softmax(logits(model, x, batch_size), dim=1)


__all__ = ["AlexNetCNN", "DenoisingAutoencoder", "InputTransform", "ResNetCNN", "SmallCNN", "TRANSFORMS", "build",
           "denoising_loss", "classification_loss", "logits", "predict"]
