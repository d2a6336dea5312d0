"""A small configurable heatmap network for facial landmarks.

The network maps (B, 3, S, S) RGB crops in [0, 1] to (B, K, S / stride, S / stride)
heatmap logits. It is a residual encoder down to stride 32, then a feature-pyramid
decoder that upsamples back to the output stride, adding the encoder feature of
the same stride at each step.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["HeatmapNet", "build_model", "SUPPORTED_STRIDES"]

# Output strides the decoder can stop at. The encoder always reaches stride 32.
SUPPORTED_STRIDES = (2, 4, 8, 16)

# ImageNet channel statistics for RGB in [0, 1], the usual normalisation of
# networks whose inputs are natural photographs.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Basic ResNet block: two 3 x 3 convolutions with BatchNorm and an identity or 1 x 1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(features)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(features), inplace=True)


class HeatmapNet(nn.Module):
    """Residual encoder with a feature-pyramid decoder that outputs one heatmap of logits per landmark.

    Layout, for width w:

    - stem: 3 x 3 convolutions with stride 2 (w / 2 channels) and stride 2 (w channels), to stride 4;
    - encoder: ``blocks`` residual blocks per stage at strides 4, 8, 16 and 32 with
      w, 2w, 4w and 4w channels (the first block of each later stage has stride 2);
    - decoder: 1 x 1 lateral convolutions to w channels, then from stride 32 down to
      ``stride``: bilinear 2x upsampling, adding the lateral feature, and a 3 x 3
      convolution with BatchNorm and ReLU. For ``stride=2`` the last step has no
      lateral feature and upsamples the stride-4 map alone;
    - head: 1 x 1 convolution to ``num_landmarks`` logits.

    The input is RGB in [0, 1]; the network subtracts the ImageNet mean and divides
    by its standard deviation itself.

    Size and speed of the default configuration (K = 68, input 128, stride 4,
    width 32, blocks 2): 1,348,500 parameters; forward at batch 1 takes about
    5.5 ms and forward plus backward at batch 32 about 0.42 s (median of 20 and
    5 runs), on one thread of a 2-core CPU with torch 2.13.0, measured with
    ``python -m explorer.core.models``. Timings vary with the machine and its load.

    Args:
        num_landmarks: K, the number of heatmaps. Default 68 (iBUG 300-W scheme).
        input_size: side S of the square input crop, a multiple of 32. Default 128.
        stride: output stride, one of ``SUPPORTED_STRIDES``. Default 4.
        width: channel width w of the stride-4 stage and the decoder, a multiple of 2. Default 32.
        blocks: residual blocks per encoder stage, >= 1. Default 2.
    """

    def __init__(
        self,
        num_landmarks: int = 68,
        input_size: int = 128,
        stride: int = 4,
        width: int = 32,
        blocks: int = 2,
    ) -> None:
        super().__init__()
        _validate_config(num_landmarks, input_size, stride, width, blocks)
        self.num_landmarks = num_landmarks
        self.input_size = input_size
        self.stride = stride
        self.width = width
        self.blocks = blocks

        self.register_buffer("image_mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

        # Encoder: stem to stride 4, then four residual stages.
        self.stem = nn.Sequential(_conv_bn_relu(3, width // 2, stride=2), _conv_bn_relu(width // 2, width, stride=2))
        stage_channels = [width, 2 * width, 4 * width, 4 * width]
        self.stages = nn.ModuleList()
        in_channels = width
        for index, out_channels in enumerate(stage_channels):
            first_stride = 1 if index == 0 else 2
            layers = [ResidualBlock(in_channels, out_channels, stride=first_stride)]
            layers += [ResidualBlock(out_channels, out_channels) for _ in range(blocks - 1)]
            self.stages.append(nn.Sequential(*layers))
            in_channels = out_channels

        # Decoder: lateral 1 x 1 projections of the stride 4..32 features, and one
        # merge convolution per upsampling step from stride 32 to the output stride.
        self.laterals = nn.ModuleList([nn.Conv2d(channels, width, 1) for channels in stage_channels])
        num_steps = {2: 4, 4: 3, 8: 2, 16: 1}[stride]
        self.merges = nn.ModuleList([_conv_bn_relu(width, width) for _ in range(num_steps)])
        self.head = nn.Conv2d(width, num_landmarks, 1)

    @property
    def config(self) -> dict[str, Any]:
        """Plain JSON-compatible configuration; ``build_model(model.config)`` rebuilds the architecture."""
        return {
            "num_landmarks": self.num_landmarks,
            "input_size": self.input_size,
            "stride": self.stride,
            "width": self.width,
            "blocks": self.blocks,
        }

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """Output grid size (H, W) = (S / stride, S / stride)."""
        side = self.input_size // self.stride
        return side, side

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map (B, 3, S, S) RGB in [0, 1] to (B, K, S / stride, S / stride) logits."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, S, S), got {tuple(images.shape)}")
        if images.shape[-2] % 32 != 0 or images.shape[-1] % 32 != 0:
            raise ValueError(
                f"image height and width must be multiples of 32, got {tuple(images.shape[-2:])}; "
                f"resize the crops to {self.input_size} x {self.input_size}"
            )

        # Encoder features at strides 4, 8, 16 and 32.
        features = self.stem((images - self.image_mean) / self.image_std)
        pyramid = []
        for stage in self.stages:
            features = stage(features)
            pyramid.append(features)

        # Top-down path: start from stride 32 and add the lateral of each finer stride.
        merged = self.laterals[3](pyramid[3])
        for step, merge in enumerate(self.merges):
            merged = F.interpolate(merged, scale_factor=2.0, mode="bilinear", align_corners=False)
            level = 2 - step
            if level >= 0:
                merged = merged + self.laterals[level](pyramid[level])
            merged = merge(merged)

        return self.head(merged)


def _validate_config(num_landmarks: int, input_size: int, stride: int, width: int, blocks: int) -> None:
    for name, value in (
        ("num_landmarks", num_landmarks),
        ("input_size", input_size),
        ("stride", stride),
        ("width", width),
        ("blocks", blocks),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    if num_landmarks < 1:
        raise ValueError(f"num_landmarks must be >= 1, got {num_landmarks}")
    if input_size < 32 or input_size % 32 != 0:
        raise ValueError(f"input_size must be a positive multiple of 32 (the encoder's stride), got {input_size}")
    if stride not in SUPPORTED_STRIDES:
        raise ValueError(f"stride must be one of {SUPPORTED_STRIDES}, got {stride}")
    if width < 2 or width % 2 != 0:
        raise ValueError(f"width must be an even int >= 2, got {width}")
    if blocks < 1:
        raise ValueError(f"blocks must be >= 1, got {blocks}")


def build_model(config: dict[str, Any]) -> HeatmapNet:
    """Build a :class:`HeatmapNet` from a configuration dict such as ``model.config``.

    Missing keys take the defaults of :class:`HeatmapNet`.

    Raises:
        TypeError: if ``config`` is not a dict.
        ValueError: if it has unknown keys or invalid values.
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    known = {"num_landmarks", "input_size", "stride", "width", "blocks"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; valid keys are {sorted(known)}")
    return HeatmapNet(**config)


def _benchmark() -> None:
    """Log the parameter count and single-thread CPU timings of the default model."""
    import time

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = HeatmapNet()
    logger.info("config %s, parameters %d", model.config, sum(p.numel() for p in model.parameters()))

    def median_seconds(function: Any, repeats: int) -> float:
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            function()
            timings.append(time.perf_counter() - start)
        return sorted(timings)[len(timings) // 2]

    # Forward at batch 1 in eval mode, as the app runs it.
    model.eval()
    single = torch.rand(1, 3, model.input_size, model.input_size)
    with torch.no_grad():
        model(single)
        logger.info("forward, batch 1: %.4f s", median_seconds(lambda: model(single), 20))

    # Forward and backward at batch 32 in train mode, as training runs it.
    model.train()
    batch = torch.rand(32, 3, model.input_size, model.input_size)

    def train_step() -> None:
        model.zero_grad()
        model(batch).square().mean().backward()

    train_step()
    logger.info("forward + backward, batch 32: %.3f s", median_seconds(train_step, 5))


if __name__ == "__main__":
    _benchmark()
