"""Flow estimation from particle-image pairs (PIV) under D4: the model maps two frames ``[B, 2, H, W]`` to the flow
``[B, 2, H, W]`` as ``(v_x, v_y)``, a covariant output: under a quarter turn or a flip the domain moves *and* the
vectors turn (``eqmonitor.actions.VectorField``). A plain CNN is compared with the same CNN averaged over D4.

python examples/flowfields.py fit --config configs/flowfields.yaml                              # plain CNN
python examples/flowfields.py fit --config configs/flowfields.yaml --model.arch d4_averaged     # D4-covariant
tensorboard --logdir lightning_logs

The pairs are generated: random particles (Gaussian blobs) displaced by a known flow, a uniform stream plus a
Rankine vortex. The monitor needs no labels: covariance compares the model with itself. :func:`load_piv_pair`
reads a real recorded pair (two grey-level images) into the same layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from eqmonitor.actions import ImageAction, VectorField
from eqmonitor.groups import Dihedral


# ------------------------------------------------------------------------------------------------------------ data
def rankine_flow(p: Tensor, centre: Tensor, circulation: Tensor, core: Tensor, stream: Tensor) -> Tensor:
    """The velocity ``[..., 2]`` at points ``p [B, ..., 2]`` of a uniform ``stream [B, 2]`` plus a Rankine vortex
    (solid-body rotation inside ``core``, ``circulation / r`` outside) about ``centre [B, 2]``, per sample ``[B]``.
    """
    view = (p.shape[0],) + (1,) * (p.ndim - 2)
    d = p - centre.reshape(*view, 2)
    r = d.norm(dim=-1).clamp_min(1e-9)
    rc, gamma = core.reshape(view), circulation.reshape(view)
    speed = torch.where(r < rc, gamma * r / rc**2, gamma / r)
    tangent = torch.stack([-d[..., 1], d[..., 0]], -1) / r[..., None]
    return stream.reshape(*view, 2) + speed[..., None] * tangent


def _render(q: Tensor, size: int, sigma: float) -> Tensor:
    """Particles at ``q [B, P, 2]`` (pixel ``(x, y)``) drawn as Gaussian blobs on a ``size × size`` image."""
    axis = torch.arange(size, dtype=q.dtype)
    gx = (axis[None, None, :] - q[..., 0:1]) ** 2  # [B, P, W]
    gy = (axis[None, None, :] - q[..., 1:2]) ** 2  # [B, P, H]
    return torch.einsum("bph,bpw->bhw", torch.exp(-gy / (2 * sigma**2)), torch.exp(-gx / (2 * sigma**2)))


def make_piv_pairs(
    n: int, size: int = 24, n_particles: int = 60, max_speed: float = 2.0, sigma: float = 1.0, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """``n`` particle-image pairs ``[n, 2, size, size]`` and their flows ``[n, 2, size, size]`` (pixels per frame).

    Each sample draws a stream (up to ``max_speed / 2``), a vortex centre near the middle, a core radius and a
    circulation (peak swirl up to ``max_speed / 2``). Frame 2 renders each particle of frame 1 moved by the flow at
    its position. A seeded generator of its own: the global random streams are untouched.
    """
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    c = (size - 1) / 2
    centre = c + (rand(n, 2) - 0.5) * size / 2
    core = size / 8 + rand(n) * size / 8
    circulation = (rand(n) * 2 - 1) * max_speed / 2 * core  # peak swirl speed = circulation / core
    stream = (rand(n, 2) * 2 - 1) * max_speed / 2 / 2**0.5
    q = rand(n, n_particles, 2) * (size + 4) - 2  # particles also just outside, so some enter the view
    q2 = q + rankine_flow(q, centre, circulation, core, stream)
    frames = torch.stack([_render(q, size, sigma), _render(q2, size, sigma)], 1)
    axis = torch.arange(size, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).expand(n, size, size, 2)  # (x, y) per pixel
    flow = rankine_flow(grid, centre, circulation, core, stream).permute(0, 3, 1, 2)
    return frames.float(), flow.float()


def load_piv_pair(frame_a: Union[str, Path], frame_b: Union[str, Path]) -> Tensor:
    """A recorded PIV pair (two grey-level image files, as PIV challenge data ship) as ``[1, 2, H, W]`` float32
    scaled to ``[0, 1]``. Not used by the tests."""
    import matplotlib.image as mpimg  # reads PNG natively, and TIFF through Pillow

    frames = []
    for path in (frame_a, frame_b):
        img = torch.as_tensor(mpimg.imread(str(path)), dtype=torch.float32)
        frames.append(img.mean(-1) if img.ndim == 3 else img)
    x = torch.stack(frames)[None]
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)


class PIVDataModule(L.LightningDataModule):
    """Generated particle-image pairs and their flows: ``n_train`` training and ``n_val`` validation samples."""

    def __init__(
        self,
        n_train: int = 512,
        n_val: int = 128,
        size: int = 24,
        n_particles: int = 60,
        max_speed: float = 2.0,
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
            make = lambda n, seed: make_piv_pairs(n, h.size, h.n_particles, h.max_speed, seed=seed)  # noqa: E731
            self.train_set = TensorDataset(*make(h.n_train, h.seed))
            self.val_set = TensorDataset(*make(h.n_val, h.seed + 1))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)


# ---------------------------------------------------------------------------------------------------------- models
def flow_cnn(width: int = 24) -> nn.Module:
    """A small fully convolutional net, two frames in, ``(v_x, v_y)`` out, at full resolution."""
    return nn.Sequential(
        nn.Conv2d(2, width, 5, padding=2), nn.ReLU(),
        nn.Conv2d(width, width, 5, padding=2), nn.ReLU(),
        nn.Conv2d(width, 2, 3, padding=1),
    )  # fmt: skip


class GroupCovariant(nn.Module):
    """``h(x) = (1/|G|) Σ_g g⁻¹ · f(g · x)``, frames moved as images and the output moved back as a vector field:
    covariant to every element of a finite planar group ``G`` acting on the pixel grid by index maps (D4 on square
    images), up to the rounding of the sum's order, since acting with ``g`` only permutes the terms."""

    def __init__(self, model: nn.Module, group: Dihedral) -> None:
        super().__init__()
        if group.order() is None:
            raise ValueError(f"Expected a finite group to average over, but got {group!r}.")
        self.model, self.group = model, group
        self.frames, self.field = ImageAction(mask=None), VectorField(mask=None)

    def forward(self, x: Tensor) -> Tensor:
        g = self.group.all_elements(x.device).repeat_interleave(x.shape[0], 0)
        k = len(g) // x.shape[0]
        out = self.model(self.frames(self.group, g, x.repeat(k, 1, 1, 1)))
        back = self.field(self.group, self.group.inverse(g), out)
        return back.reshape(k, x.shape[0], *back.shape[1:]).mean(0)


class FlowEstimator(L.LightningModule):
    """A flow estimator, ``arch="cnn"`` (:func:`flow_cnn`) or ``"d4_averaged"`` (the same CNN inside
    :class:`GroupCovariant` over D4), trained on the mean end-point error ``|v̂ − v|``."""

    def __init__(self, arch: str = "cnn", width: int = 24, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        if arch == "cnn":
            self.net: nn.Module = flow_cnn(width)
        elif arch == "d4_averaged":
            self.net = GroupCovariant(flow_cnn(width), Dihedral(4))
        else:
            raise ValueError(f"Expected `arch` to be 'cnn' or 'd4_averaged', but got {arch!r}.")

    def forward(self, frames: Tensor) -> Tensor:
        return self.net(frames)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        frames, flow = batch
        epe = (self(frames) - flow).norm(dim=1).mean()
        self.log(f"{stage}/epe", epe, prog_bar=stage == "val")
        return epe

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(args=None, run: bool = True) -> LightningCLI:
    return LightningCLI(FlowEstimator, PIVDataModule, args=args, run=run)


if __name__ == "__main__":
    main()
