"""An escnn steerable CNN monitored while it trains: escnn's rotated-MNIST model (``C8SteerableCNN`` of escnn's
own example: a mask, six ``R2Conv`` → ``InnerBatchNorm`` → ``ReLU`` blocks on regular fields of C8, anti-aliased
pooling, ``GroupPooling``, a dense head) on rotated digits padded to 29 × 29, watched for C8 invariance with the
symmetry read from the network (``symmetry_for_escnn``) and the layer-wise view of every escnn layer.

python examples/escnn_digits.py fit --config configs/escnn_digits.yaml
tensorboard --logdir lightning_logs

The symmetry comes from the network's field types, so the model brings its own :class:`EquivarianceMonitor`
(``configure_callbacks``, Lightning's hook for callbacks that depend on the model); ``model.monitor`` in the config
holds the monitor's other arguments. Importing ``eqmonitor.integrations.escnn`` registers its layer-wise adapter:
each escnn layer is measured with the actions of its own ``in_type`` / ``out_type``.

The digits are scikit-learn's bundled ones, each turned by a random angle (seeded) as MNIST-rot's are;
:func:`load_mnist_rot` reads the real MNIST-rot files (``.amat``) into the same layout. Needs escnn
(``pip install eqmonitor[escnn]``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Union

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LightningCLI
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import eqmonitor as eqm
from eqmonitor.actions import ImageAction
from eqmonitor.demos import load_digits
from eqmonitor.groups import SO2
from eqmonitor.integrations.escnn import symmetry_for_escnn

SIZE = 29  # escnn's example pads MNIST's 28 × 28 to an odd size, so that the rotation centre is a pixel centre
ESCNN_FIELDS = (24, 48, 48, 96, 96, 64)  # regular fields per block in escnn's example


# ------------------------------------------------------------------------------------------------------------ data
def pad_to_odd(images: Tensor) -> Tensor:
    """``[B, C, 28, 28]`` → ``[B, C, 29, 29]``: one zero row and column at the bottom and right, as escnn's example
    pads (``torchvision.transforms.Pad((0, 0, 1, 1))``)."""
    return F.pad(images, (0, 1, 0, 1))


def make_rotated_digits(n: Optional[int] = None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The first ``n`` (default all 1,797) bundled digits, each turned by a uniform random angle (bilinear, a seeded
    generator of its own) as MNIST-rot's digits are, padded to 29 × 29: ``images [n, 1, 29, 29]``, ``labels [n]``."""
    x, y = load_digits(28)
    x, y = x[:n], y[:n]
    angles = torch.rand(len(x), 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 * math.pi
    turned = ImageAction(mask=None)(SO2(), angles.to(x.dtype), x)
    return pad_to_odd(turned), y


def load_mnist_rot(path: Union[str, Path]) -> tuple[Tensor, Tensor]:
    """A real MNIST-rot file (``mnist_all_rotation_normalized_float_train_valid.amat`` or ``..._test.amat``: one
    digit a line, 784 pixel values then the label) as ``images [N, 1, 29, 29]`` and ``labels [N]``, read as escnn's
    example reads it. Not used by the tests (nothing is downloaded here)."""
    import numpy as np

    data = np.loadtxt(str(path), delimiter=" ")
    images = torch.as_tensor(data[:, :-1].reshape(-1, 1, 28, 28), dtype=torch.float32)
    return pad_to_odd(images), torch.as_tensor(data[:, -1], dtype=torch.long)


class RotatedDigitsDataModule(L.LightningDataModule):
    """Rotated bundled digits (:func:`make_rotated_digits`): the first ``n_train`` of a seeded permutation to train,
    ``n_val`` of the rest (default all of them) to validate and probe."""

    def __init__(self, n_train: int = 1400, n_val: Optional[int] = None, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_set: Optional[TensorDataset] = None
        self.val_set: Optional[TensorDataset] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is None:
            h = self.hparams
            x, y = make_rotated_digits(seed=h.seed)
            perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(h.seed))
            train, val = perm[: h.n_train], perm[h.n_train :]
            val = val if h.n_val is None else val[: h.n_val]
            self.train_set, self.val_set = TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)


# ----------------------------------------------------------------------------------------------------------- model
class C8SteerableCNN(nn.Module):
    """escnn's example model on ``rot2dOnR2(N)``: tensors ``[B, 1, 29, 29]`` in, class scores out, invariant to the
    ``N`` rotations by construction (equivariant blocks, then ``GroupPooling`` and pooling to ``1 × 1``).

    ``fields`` sets the regular fields of the six blocks (escnn's: :data:`ESCNN_FIELDS`). The layer-wise test measures
    every escnn layer with its field types, and the torch head after ``.tensor`` as invariant (it reads trivial fields
    on a ``1 × 1`` map, reshaped).

    Attributes:
        in_type: the input field type (one trivial field), read by ``symmetry_for_escnn``.
    """

    def __init__(self, n_rotations: int = 8, fields: tuple[int, ...] = ESCNN_FIELDS, n_classes: int = 10) -> None:
        super().__init__()
        from escnn import gspaces
        from escnn import nn as enn

        if len(fields) != 6:
            raise ValueError(f"Expected `fields` to give the regular fields of 6 blocks, but got {tuple(fields)}.")
        self.r2_act = gspaces.rot2dOnR2(N=n_rotations)
        self.in_type = in_type = enn.FieldType(self.r2_act, [self.r2_act.trivial_repr])
        blocks = []
        for i, (k, p) in enumerate([(7, 1), (5, 2), (5, 2), (5, 2), (5, 2), (5, 1)]):
            out_type = enn.FieldType(self.r2_act, fields[i] * [self.r2_act.regular_repr])
            layers = [enn.MaskModule(in_type, SIZE, margin=1)] if i == 0 else []
            layers += [
                enn.R2Conv(in_type, out_type, kernel_size=k, padding=p, bias=False),
                enn.InnerBatchNorm(out_type),
                enn.ReLU(out_type, inplace=True),
            ]
            blocks.append(enn.SequentialModule(*layers))
            in_type = out_type
        self.block1, self.block2, self.block3, self.block4, self.block5, self.block6 = blocks
        self.pool1 = enn.SequentialModule(enn.PointwiseAvgPoolAntialiased(self.block2.out_type, sigma=0.66, stride=2))
        self.pool2 = enn.SequentialModule(enn.PointwiseAvgPoolAntialiased(self.block4.out_type, sigma=0.66, stride=2))
        self.pool3 = enn.PointwiseAvgPoolAntialiased(out_type, sigma=0.66, stride=1, padding=0)
        self.gpool = enn.GroupPooling(out_type)
        c = self.gpool.out_type.size
        self.fully_net = nn.Sequential(
            nn.Linear(c, 64), nn.BatchNorm1d(64), nn.ELU(inplace=True), nn.Linear(64, n_classes)
        )

    def forward(self, input: Tensor) -> Tensor:
        from escnn import nn as enn

        x = enn.GeometricTensor(input, self.in_type)
        x = self.pool1(self.block2(self.block1(x)))
        x = self.pool2(self.block4(self.block3(x)))
        x = self.pool3(self.block6(self.block5(x)))
        x = self.gpool(x).tensor
        return self.fully_net(x.reshape(x.shape[0], -1))


class EscnnDigitsClassifier(L.LightningModule):
    """:class:`C8SteerableCNN` trained with cross-entropy, bringing its own :class:`eqmonitor.EquivarianceMonitor`.

    Args:
        n_rotations: the rotations of the gspace (``C_N``); the monitored symmetry is named ``c<N>``.
        fields: regular fields of the six blocks.
        lr: Adam learning rate.
        monitor: the monitor's arguments besides the symmetry (``{"layerwise": True}`` unless given), e.g.
            ``{"layerwise": True, "n_samples": 64, "every_n_epochs": 1}``.
    """

    def __init__(
        self,
        n_rotations: int = 8,
        fields: tuple[int, ...] = ESCNN_FIELDS,
        lr: float = 1e-3,
        monitor: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = C8SteerableCNN(n_rotations, tuple(fields))

    def symmetry(self) -> eqm.Symmetry:
        """The network's symmetry, read from its field types: ``C_N`` on the input image, class scores invariant."""
        return symmetry_for_escnn(self.net, name=f"c{self.hparams.n_rotations}", output="invariant")

    def configure_callbacks(self) -> list[L.Callback]:
        settings = {"layerwise": True} if self.hparams.monitor is None else dict(self.hparams.monitor)
        return [eqm.EquivarianceMonitor(self.symmetry(), **settings)]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y))
        self.log("val/acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(args=None, run: bool = True) -> LightningCLI:
    return LightningCLI(EscnnDigitsClassifier, RotatedDigitsDataModule, args=args, run=run)


if __name__ == "__main__":
    main()
