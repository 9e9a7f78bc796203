"""Dilated ResNet backbone with torchvision's module names, so its checkpoints load unchanged.

Only the parts FCN uses are built: the stem and ``layer1``..``layer4``. The classification head
(``avgpool``/``fc``) is left out; ImageNet checkpoints are loaded by dropping their ``fc.*`` keys.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..weights import fit_state_dict

__all__ = ["Bottleneck", "ResNet", "resnet50", "resnet101"]


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution, as in torchvision."""

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet feature extractor returning ``layer3`` and ``layer4`` maps.

    With ``replace_stride_with_dilation=[False, True, True]`` layers 3 and 4 keep stride 8 and grow
    their receptive field by dilation instead (the DeepLab/FCN trick), so the output stride is 8.
    """

    def __init__(
        self,
        layers: Sequence[int],
        replace_stride_with_dilation: Sequence[bool] = (False, False, False),
    ) -> None:
        super().__init__()
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(f"replace_stride_with_dilation needs 3 entries, got {replace_stride_with_dilation!r}")
        self.inplanes = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2, dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(256, layers[2], stride=2, dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(512, layers[3], stride=2, dilate=replace_stride_with_dilation[2])

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        # The first block of a dilated layer still uses the previous dilation (torchvision does the same).
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        x = self.layer2(self.layer1(x))  # (N, 512, H/8, W/8)
        c3 = self.layer3(x)  # (N, 1024, H/8, W/8) when dilated
        c4 = self.layer4(c3)  # (N, 2048, H/8, W/8) when dilated
        return {"layer3": c3, "layer4": c4}

    def load_imagenet_state_dict(self, state_dict: dict[str, Tensor], source: str = "ImageNet weights") -> None:
        """Load a torchvision ImageNet checkpoint, ignoring its classifier (``fc.*``); a misfit is one line naming
        ``source`` (:func:`fcnseg.weights.fit_state_dict`)."""
        features = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        fit_state_dict(self, features, source, "not an ImageNet ResNet state dict for this model")


def resnet50(replace_stride_with_dilation: Sequence[bool] = (False, False, False)) -> ResNet:
    """ResNet-50 feature extractor (3, 4, 6, 3 bottlenecks)."""
    return ResNet([3, 4, 6, 3], replace_stride_with_dilation)


def resnet101(replace_stride_with_dilation: Sequence[bool] = (False, False, False)) -> ResNet:
    """ResNet-101 feature extractor (3, 4, 23, 3 bottlenecks)."""
    return ResNet([3, 4, 23, 3], replace_stride_with_dilation)
