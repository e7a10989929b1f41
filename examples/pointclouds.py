"""Point-cloud classification under SO(3): a plain PointNet-style model against an e3nn model, both watched for
rotation invariance and for permutation invariance of the point set while they train.

python examples/pointclouds.py fit --config configs/pointclouds.yaml                       # PointNet
python examples/pointclouds.py fit --config configs/pointclouds.yaml --model.arch e3nn     # e3nn
tensorboard --logdir lightning_logs

The shapes are generated (noisy samples of a sphere, a cube's surface, a cylinder and a torus, each turned by a
random rotation), so nothing is downloaded; :func:`load_off_points` reads a real mesh (ModelNet's ``.off`` files)
into the same ``[N, 3]`` layout.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LightningCLI
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from eqmonitor.groups import SO3
from eqmonitor.integrations.e3nn import symmetry_from_irreps

SHAPES = ("sphere", "cube", "cylinder", "torus")


# ------------------------------------------------------------------------------------------------------------ data
def _surface(kind: int, n: int, g: torch.Generator) -> Tensor:
    """``n`` points on the surface of shape ``SHAPES[kind]``, about the origin: ``[n, 3]``."""
    if kind == 0:  # unit sphere
        p = torch.randn(n, 3, generator=g, dtype=torch.float64)
        return p / p.norm(dim=1, keepdim=True)
    if kind == 1:  # the cube [-1, 1]^3's faces: one coordinate pushed to ±1
        p = torch.rand(n, 3, generator=g, dtype=torch.float64) * 2 - 1
        axis = torch.randint(0, 3, (n,), generator=g)
        side = torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2 - 1
        p[torch.arange(n), axis] = side
        return p
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    theta = 2 * math.pi * u[:, 0]
    if kind == 2:  # cylinder side, radius 1, height 2
        return torch.stack([theta.cos(), theta.sin(), 2 * u[:, 1] - 1], 1)
    phi = 2 * math.pi * u[:, 1]  # torus, radii 1 and 0.4
    ring = 1 + 0.4 * phi.cos()
    return torch.stack([ring * theta.cos(), ring * theta.sin(), 0.4 * phi.sin()], 1)


def make_shapes(n: int, n_points: int = 64, noise: float = 0.02, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` clouds ``[n, n_points, 3]`` (float32, centred, unit RMS radius, randomly rotated) and labels ``[n]``.

    Classes cycle through :data:`SHAPES`; rotations are Haar-random (``SO3().sample``) from a seeded generator of
    their own, so the global random streams are untouched.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(SHAPES)
    clouds = torch.stack([_surface(int(k), n_points, g) for k in labels])
    clouds = clouds + noise * torch.randn(clouds.shape, generator=g, dtype=torch.float64)
    clouds = clouds - clouds.mean(1, keepdim=True)
    clouds = clouds / clouds.pow(2).sum(-1).mean(1).sqrt()[:, None, None]
    rot = SO3().matrix(SO3().sample(n, generator=g))
    return (clouds @ rot.transpose(1, 2)).float(), labels


def load_off_points(path: Union[str, Path], n_points: int = 64, seed: int = 0) -> Tensor:
    """A real mesh's vertices (an OFF file, as ModelNet ships them) as one cloud ``[n_points, 3]``: sampled with
    replacement, centred and scaled to unit RMS radius like :func:`make_shapes`. Not used by the tests."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    head = lines[0][3:].split() if lines[0].startswith("OFF") else []  # "OFF" alone, or "OFF<nv> <nf> <ne>"
    if not head:
        head, lines = lines[1].split(), lines[1:]
    n_vertices = int(head[0])
    vertices = torch.tensor([[float(v) for v in ln.split()[:3]] for ln in lines[1 : 1 + n_vertices]])
    idx = torch.randint(0, n_vertices, (n_points,), generator=torch.Generator().manual_seed(seed))
    p = vertices[idx] - vertices[idx].mean(0)
    return p / p.pow(2).sum(-1).mean().sqrt()


class ShapesDataModule(L.LightningDataModule):
    """Generated shape clouds: ``n_train`` training and ``n_val`` validation samples of ``n_points`` points."""

    def __init__(
        self,
        n_train: int = 512,
        n_val: int = 128,
        n_points: int = 64,
        noise: float = 0.02,
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
            self.train_set = TensorDataset(*make_shapes(h.n_train, h.n_points, h.noise, h.seed))
            self.val_set = TensorDataset(*make_shapes(h.n_val, h.n_points, h.noise, h.seed + 1))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)


# ---------------------------------------------------------------------------------------------------------- models
class PointNet(nn.Module):
    """A shared per-point MLP, a max over the points, a head: permutation-invariant, not rotation-invariant."""

    def __init__(self, n_classes: int = len(SHAPES), width: int = 64) -> None:
        super().__init__()
        self.point_mlp = nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2 * width), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(2 * width, width), nn.ReLU(), nn.Linear(width, n_classes))

    def forward(self, points: Tensor) -> Tensor:
        return self.head(self.point_mlp(points).max(dim=1).values)


class E3nnShapeNet(nn.Module):
    """An SO(3)-invariant e3nn model: per point, radial basis ⊗ spherical harmonics ``Y^l(r̂)`` (l ≤ ``lmax``),
    averaged over the points (permutation-invariant), mixed by an equivariant ``o3.Linear``, contracted to
    ``width`` scalars (``0e``) by a tensor product of the features with themselves, then an MLP on the scalars.

    Invariance is exact in arithmetic: ``Y^l(R r̂) = D^l(R) Y^l(r̂)`` with orthogonal ``D^l``, and every later layer
    maps ``D``-transformed features to ``D``-transformed features or to scalars.
    """

    def __init__(
        self, n_classes: int = len(SHAPES), lmax: int = 3, n_radial: int = 8, width: int = 32, max_radius: float = 2.5
    ) -> None:
        super().__init__()
        from e3nn import o3

        self.lmax, self.n_radial, self.max_radius = lmax, n_radial, max_radius
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.irreps_feat = o3.Irreps([(n_radial, ir) for _, ir in self.irreps_sh])
        self.linear = o3.Linear(self.irreps_feat, self.irreps_feat)
        self.contract = o3.FullyConnectedTensorProduct(self.irreps_feat, self.irreps_feat, f"{width}x0e")
        self.head = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, n_classes))

    def forward(self, points: Tensor) -> Tensor:
        from e3nn import o3
        from e3nn.math import soft_one_hot_linspace

        rel = points - points.mean(1, keepdim=True)
        sh = o3.spherical_harmonics(self.irreps_sh, rel, normalize=True, normalization="component")  # [B, N, S]
        radial = soft_one_hot_linspace(
            rel.norm(dim=-1), 0.0, self.max_radius, self.n_radial, basis="smooth_finite", cutoff=True
        )  # [B, N, R]
        blocks, start = [], 0
        for _, ir in self.irreps_sh:  # irreps layout: for each l, [n_radial, 2l+1] contiguous
            y = sh[..., start : start + ir.dim]
            blocks.append(torch.einsum("bnr,bnm->brm", radial, y).flatten(1) / points.shape[1])
            start += ir.dim
        features = self.linear(torch.cat(blocks, -1))
        return self.head(self.contract(features, features))


class PointCloudClassifier(L.LightningModule):
    """A shape classifier, ``arch="pointnet"`` (:class:`PointNet`) or ``"e3nn"`` (:class:`E3nnShapeNet`), trained
    with cross-entropy and Adam."""

    def __init__(self, arch: str = "pointnet", n_classes: int = len(SHAPES), width: int = 64, lr: float = 3e-3):
        super().__init__()
        self.save_hyperparameters()
        if arch == "pointnet":
            self.net: nn.Module = PointNet(n_classes, width)
        elif arch == "e3nn":
            self.net = E3nnShapeNet(n_classes, width=width // 2)
        else:
            raise ValueError(f"Expected `arch` to be 'pointnet' or 'e3nn', but got {arch!r}.")

    def forward(self, points: Tensor) -> Tensor:
        return self.net(points)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean(), prog_bar=stage == "val")
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def rotation_symmetry(n_classes: int = len(SHAPES), name: str = "so3", error: str = "relative"):
    """The e3nn description of both models' rotation symmetry: raw coordinates in, ``n_classes`` scalars (``0e``)
    out, under SO(3); the same measurement as the config's ``{group: so3, input: points, output: invariant}``."""
    return symmetry_from_irreps("cartesian_points", f"{n_classes}x0e", group="so3", name=name, error=error)


def main(args=None, run: bool = True) -> LightningCLI:
    return LightningCLI(PointCloudClassifier, ShapesDataModule, args=args, run=run)


if __name__ == "__main__":
    main()
