"""Single-object detection under translation: a CNN predicts the box ``(x1, y1, x2, y2)`` of one bright square on a
noisy image, trained with objects at the centre only (``jitter=0``) or shifted anywhere (``jitter=1``), and watched
for translation equivariance: shifting the image should shift the box (``eqmonitor.actions.Boxes``).

python examples/detection.py fit --config configs/detection.yaml                       # 0% jitter
python examples/detection.py fit --config configs/detection.yaml --model.jitter 1.0    # 100% jitter
tensorboard --logdir lightning_logs

The images are generated; the validation objects sit anywhere, so the check probes off-centre inputs the centred
model never saw. :func:`load_voc_boxes` reads a real annotation (a Pascal VOC XML file) into the same layout.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Union

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LightningCLI
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from eqmonitor.actions import Boxes, ImageAction
from eqmonitor.groups import Translation


# ------------------------------------------------------------------------------------------------------------ data
def max_offset(size: int, max_side: int) -> int:
    """The largest shift of an object's centre from the image centre that keeps any object fully inside."""
    return (size - max_side) // 2 - 1


def make_detection_images(
    n: int,
    size: int = 32,
    min_side: int = 4,
    max_side: int = 8,
    centred: bool = False,
    noise: float = 0.2,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """``n`` images ``[n, 1, size, size]`` with one bright square each on Gaussian noise, and its box ``[n, 4]``.

    Boxes are ``(x1, y1, x2, y2)`` in pixel coordinates (``x`` along columns, pixel centres at integers): a square
    covering columns ``a … a+s−1`` spans ``a − ½ … a + s − ½``. ``centred`` puts every square at the middle (up to
    half a pixel); otherwise anywhere within :func:`max_offset`. A seeded generator of its own.
    """
    g = torch.Generator().manual_seed(seed)
    side = torch.randint(min_side, max_side + 1, (n,), generator=g)
    reach = 0 if centred else max_offset(size, max_side)
    offset = torch.randint(-reach, reach + 1, (n, 2), generator=g)
    start = (size - side[:, None]) // 2 + offset  # the top-left pixel (column, row)
    axis = torch.arange(size)
    inside = [(axis >= start[:, i, None]) & (axis < (start[:, i] + side)[:, None]) for i in (0, 1)]  # [n, size]
    square = (inside[1][:, :, None] & inside[0][:, None, :]).float()  # rows × columns
    images = square + noise * torch.randn(n, size, size, generator=g)
    boxes = torch.cat([start - 0.5, start + side[:, None] - 0.5], 1).float()
    return images[:, None], boxes


def load_voc_boxes(path: Union[str, Path]) -> Tensor:
    """The boxes ``[K, 4]`` of a Pascal VOC annotation file, ``(x1, y1, x2, y2)`` in the frame above (VOC counts
    pixels from 1 and includes both end pixels). Not used by the tests."""
    root = ET.parse(str(path)).getroot()
    boxes = []
    for obj in root.iter("object"):
        b = obj.find("bndbox")
        x1, y1, x2, y2 = (float(b.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([x1 - 1.5, y1 - 1.5, x2 - 0.5, y2 - 0.5])
    return torch.tensor(boxes).reshape(-1, 4)


class DetectionDataModule(L.LightningDataModule):
    """Training images with centred squares (the model's ``jitter`` shifts them) and validation images with squares
    anywhere."""

    def __init__(
        self,
        n_train: int = 512,
        n_val: int = 128,
        size: int = 32,
        min_side: int = 4,
        max_side: int = 8,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_set: Optional[TensorDataset] = None
        self.val_set: Optional[TensorDataset] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is None:
            h = self.hparams
            kw = dict(size=h.size, min_side=h.min_side, max_side=h.max_side)
            self.train_set = TensorDataset(*make_detection_images(h.n_train, centred=True, seed=h.seed, **kw))
            self.val_set = TensorDataset(*make_detection_images(h.n_val, centred=False, seed=h.seed + 1, **kw))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)


# ----------------------------------------------------------------------------------------------------------- model
class BoxRegressor(L.LightningModule):
    """A CNN with a dense head regressing one box (as centre offset and size about the image centre), trained with
    smooth-L1 on the box corners.

    Args:
        jitter: the share of the largest in-image shift (:func:`max_offset`) by which each training image and its
            box are shifted at random: ``0.0`` trains on centred objects only, ``1.0`` on objects anywhere. The
            shift uses the same actions the monitor checks with (``ImageAction`` and ``Boxes`` under
            ``Translation``), integer pixels, so image and box stay exactly consistent.
        size, max_side: the image side and the largest object side (for the shift range).
        width: channels of the convolutions.
        lr: Adam learning rate.
    """

    def __init__(
        self, jitter: float = 0.0, size: int = 32, max_side: int = 8, width: int = 16, lr: float = 3e-3
    ) -> None:
        super().__init__()
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"Expected `jitter` to be a share in [0, 1], but got {jitter!r}.")
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * (size // 4) ** 2, 64), nn.ReLU(), nn.Linear(64, 4)
        )
        self.shift = round(jitter * max_offset(size, max_side))
        self.image_action, self.box_action = ImageAction(mask=None), Boxes((size, size))

    def forward(self, images: Tensor) -> Tensor:
        out = self.head(self.features(images))
        centre = (self.hparams.size - 1) / 2 + out[:, :2]
        half = F.softplus(out[:, 2:]) * self.hparams.max_side / 2
        return torch.cat([centre - half, centre + half], 1)

    def jittered(self, images: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Images and boxes shifted together by random integer shifts of up to ``self.shift`` pixels."""
        if self.shift == 0:
            return images, boxes
        group = Translation(2, max_shift=self.shift, integer=True)
        shifts = group.sample(images.shape[0], device=images.device)
        return self.image_action(group, shifts, images), self.box_action(group, shifts, boxes)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, boxes = batch
        loss = F.smooth_l1_loss(self(images), boxes)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(self.jittered(*batch), "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(args=None, run: bool = True) -> LightningCLI:
    return LightningCLI(BoxRegressor, DetectionDataModule, args=args, run=run)


if __name__ == "__main__":
    main()
