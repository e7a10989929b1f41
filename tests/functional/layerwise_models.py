"""Models built the way their users build them, for the layer-wise tests (a module of its own, not collected).

``ResNet`` follows torchvision's ``resnet.py`` line by line (``BasicBlock``: conv-bn-relu(inplace=True)-conv-bn,
``out += identity``, the block's one ``relu`` called twice; the stem's ``relu(inplace=True)`` and max-pool;
``torch.flatten(x, 1)`` in ``forward`` before ``fc``), narrower and with one block per stage. torchvision itself is
not a dependency: its PyPI wheel pulls a CUDA build of torch.

``c4_symmetrise`` averages every convolution kernel over the four quarter turns: on odd-sized images (so that
stride-2 sampling grids are centred) such a network, with BatchNorm in eval mode (a per-channel affine map), is
exactly C4-invariant.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def c4_symmetrise(model: nn.Module) -> nn.Module:
    """Average every ``Conv2d`` kernel over the quarter turns, and give BatchNorms non-trivial statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                w = m.weight
                m.weight.copy_(sum(torch.rot90(w, k, (-2, -1)) for k in range(4)) / 4)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        out = self.relu(out)

        return out


class ResNet(nn.Module):
    """torchvision's ``ResNet`` with ``BasicBlock``: ``blocks`` per stage (``resnet18``: ``(2, 2, 2, 2)``), ``width``
    channels in the first stage (64 in ``resnet18``), doubling per stage."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 4,
        inplace: bool = True,
        blocks: tuple = (1, 1, 1, 1),
    ) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, blocks[0])
        self.layer2 = self._make_layer(2 * width, blocks[1], stride=2)
        self.layer3 = self._make_layer(4 * width, blocks[2], stride=2)
        self.layer4 = self._make_layer(8 * width, blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width, num_classes)
        if not inplace:
            for m in self.modules():
                if isinstance(m, nn.ReLU):
                    m.inplace = False
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    m.forward = _out_of_place_forward.__get__(m)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)

        return x


def _out_of_place_forward(self: BasicBlock, x: Tensor) -> Tensor:
    """``BasicBlock.forward`` with ``out = out + identity`` (the reference the in-place one must agree with)."""
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    identity = self.downsample(x) if self.downsample is not None else x
    return self.relu(out + identity)


def c4_resnet(inplace: bool = True, seed: int = 0, **kw) -> ResNet:
    """An exactly C4-invariant ``ResNet`` (odd-sized inputs, e.g. 33×33: maps 17, 9, 9, 5, 3, 2), in eval mode."""
    torch.manual_seed(seed)
    return c4_symmetrise(ResNet(inplace=inplace, **kw)).eval()
