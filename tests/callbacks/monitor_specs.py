"""Shared constants of the callback tests (a module of its own: importing `conftest` clashes with --doctest-modules)."""

C4_SPEC = {"name": "c4", "group": "c4", "input": "image", "output": "invariant"}


def nan_on_rotated(ratio: float = 1.5):
    """A :class:`DigitsClassifier` that outputs NaN, in eval mode, for inputs whose bottom half holds ``ratio`` times
    the mass of their top half (rotations of upright digits): a partly-NaN model."""
    import torch

    from eqmonitor.demos import DigitsClassifier

    class NaNOnRotated(DigitsClassifier):
        def forward(self, x):
            out = super().forward(x)
            if self.training:
                return out
            h = x.shape[-2] // 2
            bad = x[..., h:, :].flatten(1).sum(1) > x[..., :h, :].flatten(1).sum(1) * ratio
            return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)

    return NaNOnRotated()
