"""Wigner ``D`` matrices in float64 whatever the default dtype, by e3nn's own formula.

e3nn builds its Lie-algebra generators in the *default* dtype, so ``D_from_matrix`` of a float64 matrix is only
float32-accurate (≈1e-7) in a float32 process. Here the generators are built in float64 (on the elements' device) and
``D^l(R) = p^k exp(α X_y) exp(β X_x) exp(γ X_y)`` with ``(α, β, γ) = o3.matrix_to_angles(det(R) R)``; it equals
``o3.Irreps(irreps).D_from_matrix(R)`` computed under ``torch.set_default_dtype(torch.float64)`` to ~1e-15. Like
e3nn's, it goes through Euler angles, which are ill-conditioned within ~1e-8 rad of ``β = 0`` or ``π``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from eqmonitor.integrations.e3nn._common import _C128, _F64, _o3


def _su2_generators_f64(j: int) -> Tensor:
    """e3nn's ``o3.su2_generators(j)``, built in complex128 instead of the default dtype, ``[3, 2j+1, 2j+1]``."""
    m = torch.arange(-j, j, dtype=_F64)
    raising = torch.diag(-torch.sqrt(j * (j + 1) - m * (m + 1)), diagonal=-1).to(_C128)
    m = torch.arange(-j + 1, j + 1, dtype=_F64)
    lowering = torch.diag(torch.sqrt(j * (j + 1) - m * (m - 1)), diagonal=1).to(_C128)
    m = torch.arange(-j, j + 1, dtype=_F64)
    return torch.stack([0.5 * (raising + lowering), torch.diag(1j * m), -0.5j * (raising - lowering)], dim=0)


@lru_cache(maxsize=None)
def _so3_generators_f64(l: int, device: str) -> Tensor:  # noqa: E741 (l is the degree, as in e3nn)
    """e3nn's real ``o3.so3_generators(l)`` in float64 on ``device``, ``[3, 2l+1, 2l+1]`` (cached: they are fixed)."""
    x = _su2_generators_f64(l)
    q = _o3().change_basis_real_to_complex(l, dtype=_F64, device="cpu")
    x = torch.conj(q.T) @ x @ q
    return torch.real(x).contiguous().to(device)


def _wigner_blocks(ls_parities: list[tuple[int, int]], matrix: Tensor) -> dict[tuple[int, int], Tensor]:
    """``{(l, p): D [B, 2l+1, 2l+1]}`` float64 for rotation/reflection matrices ``matrix [B, 3, 3]``.

    Follows ``o3.Irrep.D_from_matrix``: ``k = (1 - det R) / 2``, ``(α, β, γ) = matrix_to_angles(det(R) R)``,
    ``D = p^k exp(α X_y) exp(β X_x) exp(γ X_y)``, with float64 generators.
    """
    o3 = _o3()
    r = matrix.to(_F64)
    d = torch.det(r).sign()
    alpha, beta, gamma = o3.matrix_to_angles(d[:, None, None] * r)
    k = (1 - d) / 2
    # as in o3.wigner_D: angles taken modulo 2π
    alpha, beta, gamma = (t[:, None, None] % (2 * math.pi) for t in (alpha, beta, gamma))
    cache: dict[int, Tensor] = {}
    out = {}
    for l, p in ls_parities:  # noqa: E741
        if l not in cache:
            x = _so3_generators_f64(l, str(r.device))
            cache[l] = torch.matrix_exp(alpha * x[1]) @ torch.matrix_exp(beta * x[0]) @ torch.matrix_exp(gamma * x[1])
        out[(l, p)] = cache[l] * (float(p) ** k)[:, None, None]
    return out
