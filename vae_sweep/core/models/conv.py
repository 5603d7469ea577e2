"""A convolutional family: stride-2 convolutions down to a small feature map, transposed convolutions back up.

Any (channels, height, width) works: each transposed convolution is asked for the exact size its encoder
counterpart saw, so odd sizes (7 -> 4 -> 7) come back as they went in. The defaults are sized for two CPU cores
(benchmarks: seconds per epoch beside the MLP's); `model.channels=[32,64,128]` is the larger setting for a GPU.
"""

from dataclasses import dataclass, field
from typing import ClassVar, List

from torch import Tensor, nn

from vae_sweep.core.models.base import ACTIVATIONS, Activation
from vae_sweep.core.models.settings import ModelSettings, Rules
from vae_sweep.errors import UserError

STRIDE = 2


@dataclass
class ConvSettings(ModelSettings):
    name: str = "conv"
    channels: List[int] = field(default_factory=lambda: [16, 32])  # output channels of each stride-2 convolution
    kernel: int = 4
    activation: Activation = Activation.relu

    RULES: ClassVar[Rules] = {
        **ModelSettings.RULES,
        "channels": (lambda v: len(v) >= 1 and all(c >= 1 for c in v), "a non-empty list of integers >= 1"),
        "kernel": (lambda v: 2 <= v <= 7, "an integer in [2, 7]"),
    }


def _padding(kernel: int) -> int:
    return (kernel - 1) // 2


def _after_layers(settings: ConvSettings, side: int) -> list[int]:
    """A side of the input and after each stride-2 convolution."""
    sides = [side]
    for _ in settings.channels:
        sides.append((sides[-1] + 2 * _padding(settings.kernel) - settings.kernel) // STRIDE + 1)
    return sides


def smallest_side(settings: ConvSettings) -> int:
    """The smallest image side the convolutions leave at least one pixel of."""
    side = 1
    while _after_layers(settings, side)[-1] < 1:
        side += 1
    return side


def check(settings: ConvSettings, shape: tuple[int, int, int]) -> None:
    """Refuse, before any run exists, images the convolutions would shrink to nothing."""
    height, width = shape[1:]
    minimum = smallest_side(settings)
    if min(height, width) < minimum:
        raise UserError(
            f"data.size: {height}x{width} images are too small for model=conv with model.channels="
            f"{list(settings.channels)} and model.kernel={settings.kernel} ({len(settings.channels)} stride-2 "
            f"convolutions need sides of at least {minimum}); set data.size >= {minimum}, or use fewer model.channels."
        )


def feature_sizes(settings: ConvSettings, shape: tuple[int, int, int]) -> list[tuple[int, int]]:
    """(height, width) of the input and after each convolution."""
    check(settings, shape)
    return list(zip(*(_after_layers(settings, side) for side in shape[1:]), strict=True))


def encoder(settings: ConvSettings, shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    """Flattened pixels -> convolutions -> flattened features, and the number of features."""
    layers: list[nn.Module] = [nn.Unflatten(-1, shape)]
    for c_in, c_out in zip([shape[0], *settings.channels[:-1]], settings.channels, strict=True):
        conv = nn.Conv2d(c_in, c_out, settings.kernel, STRIDE, _padding(settings.kernel))
        layers += [conv, ACTIVATIONS[settings.activation.value]()]
    height, width = feature_sizes(settings, shape)[-1]
    return nn.Sequential(*layers, nn.Flatten()), settings.channels[-1] * height * width


class ConvDecoder(nn.Module):
    """latent (any leading dimensions) -> a linear layer -> transposed convolutions -> flattened pixel logits."""

    def __init__(self, settings: ConvSettings, shape: tuple[int, int, int]):
        super().__init__()
        self.sizes = feature_sizes(settings, shape)
        self.map_shape = (settings.channels[-1], *self.sizes[-1])
        self.activation = ACTIVATIONS[settings.activation.value]()
        self.linear = nn.Linear(settings.latent, self.map_shape[0] * self.sizes[-1][0] * self.sizes[-1][1])
        outs = [shape[0], *settings.channels[:-1]]
        self.layers = nn.ModuleList(
            nn.ConvTranspose2d(c_in, c_out, settings.kernel, STRIDE, _padding(settings.kernel))
            for c_in, c_out in zip(reversed(settings.channels), reversed(outs), strict=True)
        )

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        h = self.activation(self.linear(z.reshape(-1, z.shape[-1]))).reshape(-1, *self.map_shape)
        for index, layer in enumerate(self.layers):
            h = layer(h, output_size=self.sizes[-index - 2])
            if index < len(self.layers) - 1:
                h = self.activation(h)
        return h.reshape(*lead, -1)


def decoder(settings: ConvSettings, shape: tuple[int, int, int]) -> nn.Module:
    return ConvDecoder(settings, shape)
