"""The isolation context and modules that override ``train``: their own call sets their mode, and everything it
changes (buffers, attributes, ``requires_grad``, flags) is put back on exit."""

from __future__ import annotations

import torch
from torch import nn

from eqmonitor.functional._isolation import isolated


class CachedLinear(nn.Linear):
    """escnn's pattern: ``train(False)`` caches a derived weight as a buffer, ``train(True)`` deletes it."""

    def train(self, mode: bool = True):
        if mode and "cached" in self._buffers:
            del self.cached
        elif not mode and self.training:
            self.register_buffer("cached", 2 * self.weight.detach())
        return super().train(mode)

    def forward(self, x):
        weight = self.cached if not self.training else 2 * self.weight
        return nn.functional.linear(x, weight, self.bias)


class FrozenBackbone(nn.Module):
    """A common fine-tuning pattern: ``train()`` keeps the backbone (and its BatchNorm) in eval mode, frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 2))

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        return self

    def forward(self, x):
        return self.head(self.backbone(x))


def _buffers(model: nn.Module) -> list:
    return [
        (m, dict(m._buffers), {k: b.clone() for k, b in m._buffers.items() if b is not None}) for m in model.modules()
    ]


def _same(model: nn.Module, saved: list) -> bool:
    for (m, objects, values), now in zip(saved, model.modules()):
        if m is not now or m._buffers.keys() != objects.keys():
            return False
        if any(m._buffers[k] is not objects[k] or not torch.equal(m._buffers[k], v) for k, v in values.items()):
            return False
    return True


def test_own_train_is_called_and_its_cache_put_back():
    torch.manual_seed(0)
    model = nn.Sequential(CachedLinear(3, 3), nn.ReLU())  # train mode: no cache
    x = torch.randn(2, 3)
    expected = model(x)
    saved, flags = _buffers(model), [m.training for m in model.modules()]
    with torch.no_grad(), isolated(model):
        assert not model[0].training and "cached" in model[0]._buffers  # its own train(False) ran
        torch.testing.assert_close(model(x), expected)
    assert _same(model, saved) and "cached" not in model[0]._buffers
    assert [m.training for m in model.modules()] == flags
    model.eval()  # now cached: train(True) inside deletes it, the exit puts the same tensor back
    saved, cache = _buffers(model), model[0].cached
    with isolated(model, train=True):
        assert model[0].training and "cached" not in model[0]._buffers
    assert _same(model, saved) and model[0].cached is cache and not model[0].training


def test_a_frozen_backbone_stays_in_eval_mode_and_everything_is_restored():
    torch.manual_seed(0)
    model = FrozenBackbone()
    model.backbone[1].train()  # as found: flags that its own train() would change
    for p in model.backbone.parameters():
        p.requires_grad_(True)
    saved, flags = _buffers(model), [m.training for m in model.modules()]
    with isolated(model, train=True):
        assert not model.backbone[1].training  # the model's own rule, not the probe's
        assert not model.head[0].training  # dropout off in train mode, as for every model
        assert model.head[1].training
        model(torch.randn(8, 4))
    assert _same(model, saved)
    assert [m.training for m in model.modules()] == flags
    assert all(p.requires_grad for p in model.parameters())
