"""A reference Lightning setup on the bundled digits: the examples, the configs, the integration tests and the
overhead benchmark all train this model, with or without rotation augmentation.
"""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from eqmonitor.demos.data import load_digits
from eqmonitor.demos.models import GroupAveraged, SmallCNN
from eqmonitor.groups import Cyclic

__all__ = ["DigitsClassifier", "DigitsDataModule"]


class DigitsDataModule(L.LightningDataModule):
    """sklearn's 1,797 digits at ``size × size``: a fixed split into ``n_train`` training and the rest validation.

    Args:
        batch_size: training and validation batch size.
        n_train: training samples (the first ``n_train`` of a seeded permutation).
        size: image side.
        seed: seed of the split (its own generator: the global RNG is untouched).
    """

    def __init__(self, batch_size: int = 64, n_train: int = 1400, size: int = 28, seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.n_train, self.size, self.seed = batch_size, n_train, size, seed
        self.train_set: Optional[TensorDataset] = None
        self.val_set: Optional[TensorDataset] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        x, y = load_digits(self.size)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        tr, va = perm[: self.n_train], perm[self.n_train :]
        self.train_set, self.val_set = TensorDataset(x[tr], y[tr]), TensorDataset(x[va], y[va])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)


ARCHITECTURES = ("cnn", "c4_averaged")


class DigitsClassifier(L.LightningModule):
    """:class:`~eqmonitor.demos.SmallCNN` (optionally with BatchNorm and Dropout) trained with cross-entropy.

    Args:
        lr: Adam learning rate.
        augment: ``"none"``, ``"c4"`` (random quarter turns per sample) or ``"so2"`` (random rotations).
        batch_norm, dropout, width, pool: passed to :class:`~eqmonitor.demos.SmallCNN`.
        architecture: ``"cnn"`` (the plain CNN) or ``"c4_averaged"`` (the same CNN inside
            :class:`~eqmonitor.demos.GroupAveraged` over C4: invariant to quarter turns by construction, at four
            forwards per input).
    """

    def __init__(
        self,
        lr: float = 3e-3,
        augment: str = "none",
        batch_norm: bool = False,
        dropout: float = 0.0,
        width: int = 16,
        pool: str = "flatten",
        architecture: str = "cnn",
    ) -> None:
        super().__init__()
        if augment not in ("none", "c4", "so2"):
            raise ValueError(f"`augment` must be 'none', 'c4' or 'so2', got {augment!r}.")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"Expected `architecture` to be one of {ARCHITECTURES}, but got {architecture!r}.")
        self.save_hyperparameters()
        net: nn.Module = SmallCNN(batch_norm=batch_norm, dropout=dropout, width=width, pool=pool)
        self.net = GroupAveraged(net, Cyclic(4)) if architecture == "c4_averaged" else net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _augment(self, x: Tensor) -> Tensor:
        if self.hparams.augment == "c4":
            k = torch.randint(0, 4, (x.shape[0],), device=x.device)
            return torch.stack([torch.rot90(xi, int(ki), (-2, -1)) for xi, ki in zip(x, k)])
        if self.hparams.augment == "so2":
            theta = torch.rand(x.shape[0], device=x.device, dtype=x.dtype) * 2 * torch.pi
            c, s = theta.cos(), theta.sin()
            mats = torch.stack([torch.stack([c, -s, 0 * c], -1), torch.stack([s, c, 0 * c], -1)], 1)
            grid = F.affine_grid(mats, list(x.shape), align_corners=False)
            return F.grid_sample(x, grid, align_corners=False)
        return x

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(self._augment(x)), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
