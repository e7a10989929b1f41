"""A digits training set of realistic epoch size for the overhead benchmark: random rotations and shifts generated
on the fly, deterministically.

``RandomAffineDigits[i]`` is digit ``i % n`` of the training split, turned by a random angle and shifted by a random
sub-pixel offset drawn from a ``torch.Generator`` seeded with ``(seed, i)``: the same index always gives the same
sample, the global RNG streams are never touched, and an epoch can be any length (default 20,480 samples, 160 steps
of 128). Validation is the plain held-out digits, so the monitor probes untransformed inputs.
"""

from __future__ import annotations

import math
from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from eqmonitor.demos import load_digits

__all__ = ["RandomAffineDigits", "RealisticDigitsDataModule"]


class RandomAffineDigits(Dataset):
    """``length`` samples: digit ``i % len(images)`` under a random rotation (uniform in ``±max_degrees``) and shift
    (uniform in ``±max_shift`` pixels per axis), bilinear with zero padding.

    Args:
        images: ``[n, C, H, W]`` source images.
        labels: ``[n]`` class labels.
        length: samples per epoch.
        max_degrees: largest rotation angle, in degrees.
        max_shift: largest shift along each axis, in pixels.
        seed: base seed; sample ``i`` uses ``torch.Generator().manual_seed(seed * 2**32 + i)``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        length: int = 20_480,
        max_degrees: float = 180.0,
        max_shift: float = 3.0,
        seed: int = 0,
    ) -> None:
        if images.ndim != 4 or len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"Expected images [n, C, H, W] and labels [n], got {images.shape} and {labels.shape}.")
        if length < 1:
            raise ValueError(f"`length` must be positive, got {length}.")
        self.images, self.labels = images, labels
        self.length, self.max_degrees, self.max_shift, self.seed = length, max_degrees, max_shift, seed
        h, w = images.shape[-2:]
        eye = torch.eye(2, 3, dtype=images.dtype)[None]
        base = F.affine_grid(eye, [1, 1, h, w], align_corners=False).reshape(h * w, 2)
        self._base = torch.cat([base, torch.ones(h * w, 1, dtype=images.dtype)], 1)  # [H*W, 3] homogeneous

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        gen = torch.Generator().manual_seed(self.seed * 2**32 + i)
        a, dx, dy = (2 * torch.rand(3, generator=gen, dtype=torch.float64) - 1).tolist()  # each in [-1, 1)
        theta = a * math.radians(self.max_degrees)
        x = self.images[i % len(self.images)]
        h, w = x.shape[-2:]
        c, s = math.cos(theta), math.sin(theta)
        # grid_sample's coordinates are normalised ([-1, 1] across the image): a shift of t pixels is 2t / size.
        # The grid is affine_grid's (base grid times the matrix), without its per-call overhead.
        mat = torch.tensor([[c, -s, 2 * dx * self.max_shift / w], [s, c, 2 * dy * self.max_shift / h]], dtype=x.dtype)
        grid = (self._base @ mat.T).reshape(1, h, w, 2)
        out = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        return out, self.labels[i % len(self.labels)]


class RealisticDigitsDataModule(L.LightningDataModule):
    """Training: :class:`RandomAffineDigits` over the ``n_train`` training digits (same seeded split as
    :class:`~eqmonitor.demos.DigitsDataModule`), ``epoch_size`` samples per epoch, shuffled;
    validation: the remaining plain digits.

    Args:
        epoch_size: training samples per epoch.
        batch_size: training and validation batch size.
        n_train: digits in the training split.
        num_workers: DataLoader worker processes (0: transforms run in the training process).
        seed: seed of the split and of the transforms.
    """

    def __init__(
        self, epoch_size: int = 20_480, batch_size: int = 128, n_train: int = 1400, num_workers: int = 0, seed: int = 0
    ) -> None:
        super().__init__()
        self.epoch_size, self.batch_size, self.n_train = epoch_size, batch_size, n_train
        self.num_workers, self.seed = num_workers, seed
        self.train_set: Optional[RandomAffineDigits] = None
        self.val_set: Optional[TensorDataset] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        x, y = load_digits()
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        tr, va = perm[: self.n_train], perm[self.n_train :]
        self.train_set = RandomAffineDigits(x[tr], y[tr], length=self.epoch_size, seed=self.seed)
        self.val_set = TensorDataset(x[va], y[va])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)
