"""Feature actions beyond image maps: ViT-style token grids, and the feature-adapter protocol of layer_errors."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import Tensor, nn

import eqmonitor as eqm
from eqmonitor.actions.base import Action
from eqmonitor.demos import C4SymmetricConv2d
from eqmonitor.functional import layerwise
from eqmonitor.functional.layerwise import FeatureAdapter, TokenGridAction, feature_action, layer_errors, token_grid


@pytest.fixture
def c4():
    return eqm.Symmetry.from_spec(name="c4", group="c4")


@pytest.fixture
def images():
    return torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))


# ============================================================================================= ViT-style tokens
class ToTokens(nn.Module):
    """``[B, C, h, w] -> [B, h*w, C]``, row-major, as ViT patch embeddings are flattened."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).transpose(1, 2)


class AddClassToken(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, dim))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.token.expand(x.shape[0], -1, -1), x], 1)


class AddPositional(nn.Module):
    """A learned positional embedding: it tells patches apart by position, so it breaks rotation equivariance."""

    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, tokens, dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pos


class ClassReadout(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x[:, 0]


class MeanReadout(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(1)


class TinyViT(nn.Sequential):
    """16×16 images, 4×4 patches (4 divides 16, so a quarter turn maps patches onto patches) embedded by a C4-symmetric
    kernel (a turned patch embeds like the original), a class token, one transformer encoder layer, a readout.

    Without positional embedding the token map is C4-equivariant: attention and the per-token MLP and norms are
    permutation-equivariant, and a quarter turn of the image permutes the patch tokens."""

    def __init__(self, positional: bool = False, readout: str = "class", dim: int = 16) -> None:
        torch.manual_seed(0)
        layers = {
            "embed": C4SymmetricConv2d(1, dim, 4, stride=4),
            "tokens": ToTokens(),
            "cls": AddClassToken(dim),
            "pos": AddPositional(17, dim) if positional else nn.Identity(),
            "block": nn.TransformerEncoderLayer(dim, 2, 32, dropout=0.1, batch_first=True),
            "norm": nn.LayerNorm(dim),
            "readout": ClassReadout() if readout == "class" else MeanReadout(),
            "head": nn.Linear(dim, 3),
        }
        super().__init__(*layers.values())
        for i, name in enumerate(layers):  # readable layer names
            self._modules[name] = self._modules.pop(str(i))


READOUT = {"readout": "invariant"}  # a class token or a mean over tokens: invariant by design


def test_token_grid_recognises_patch_grids_and_extra_tokens():
    assert token_grid(16, 16, 16) == (0, 4, 4)
    assert token_grid(17, 16, 16) == (1, 4, 4)
    assert token_grid(201, 224, 224) == (5, 14, 14)  # class + 4 register tokens
    assert token_grid(8 * 4, 32, 64) == (0, 4, 8)  # non-square image, square patches
    assert token_grid(12, 16, 16) is None and token_grid(3, 16, 16) is None and token_grid(9, 16, 16) is None
    assert token_grid(16 + 9, 16, 16) is None  # more than 8 extra tokens


def test_token_action_is_the_image_action_on_the_patch_map(c4):
    """Tokens from ``Conv2d(stride=p) -> flatten(2) -> transpose(1, 2)`` of a turned image are the turned map's tokens,
    and the class token is left alone."""
    g, act = feature_action(c4, torch.Size([1, 16, 16]), torch.Size([17, 5]))
    assert isinstance(act, TokenGridAction) and act.grid == (4, 4) and act.extra == 1
    fmap = torch.randn(2, 5, 4, 4)
    cls = torch.randn(2, 1, 5)
    tokens = torch.cat([cls, fmap.flatten(2).transpose(1, 2)], 1)
    r90 = torch.tensor([[1.0], [1.0]])
    turned = act(g, r90, tokens)
    expected = eqm.actions.ImageAction()(c4.group, r90, fmap)
    assert torch.equal(turned[:, 1:], expected.flatten(2).transpose(1, 2))
    assert torch.equal(turned[:, :1], cls)
    assert not torch.equal(turned, tokens)
    assert bool(act.exact_elements(g, c4.group.all_elements(), tokens.shape).all())
    assert feature_action(c4, torch.Size([1, 16, 16]), torch.Size([12, 5])) is None  # not a patch grid: skipped


@pytest.mark.parametrize(("readout", "mode"), [("class", "eval"), ("mean", "eval"), ("class", "train")])
def test_vit_without_positional_embedding_has_no_failing_layer(c4, images, readout, mode):
    """Also in train mode, where the block's dropouts and its attention's dropout (p = 0.1) must stay off.

    The readout's flat output (the class token, or the mean over tokens) has an action its shape cannot tell: the
    caller declares it invariant; without that it is not measured, and neither is the head's isolated error."""
    unknown = layer_errors(TinyViT(readout=readout).eval(), images, c4, c4.group.all_elements(), mode=mode)
    assert unknown.not_measured == {"readout": "unknown feature action", "head": "unknown input action"}
    assert torch.isnan(unknown.cumulative[unknown.names.index("readout")]).all()
    res = layer_errors(
        TinyViT(readout=readout).eval(), images, c4, c4.group.all_elements(), mode=mode, feature_actions=READOUT
    )
    assert res.not_measured == {}
    assert res.names == ["embed", "tokens", "cls", "block", "norm", "readout", "head"]  # block measured whole
    assert res.first_failing is None
    assert float(res.cumulative.max()) < 1e-5 and float(res.isolated.nan_to_num().max()) < 1e-5
    assert not torch.isnan(res.isolated[res.names.index("block")]).any()  # tokens in, tokens out: measured


def test_learned_positional_embedding_is_the_first_failing_layer(c4, images):
    res = layer_errors(TinyViT(positional=True), images, c4, c4.group.all_elements(), feature_actions=READOUT)
    assert res.first_failing == "pos"
    cum, iso = res.per_layer("cumulative"), res.per_layer("isolated")
    assert float(iso[res.names.index("pos")]) > 1e-1
    for earlier in ("embed", "tokens", "cls"):
        assert float(cum[res.names.index(earlier)]) < 1e-6
    for later in ("block", "norm", "head"):  # carry the error, are not its cause
        assert float(cum[res.names.index(later)]) > 1e-2
        assert float(iso[res.names.index(later)]) < 1e-5
    assert float(res.cumulative[:, :, 0].max()) < 1e-6  # the identity element moves nothing


# ============================================================================================= adapter protocol
class Boxed:
    """A tensor with its type attached, as escnn's ``GeometricTensor``: what the library's modules take and return."""

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor


def regular_c4(elements: Tensor, x: Tensor) -> Tensor:
    """C4 on regular fields ``[B, F*4, H, W]``: turn the plane and shift each field's 4 orientation channels."""
    turned = eqm.actions.ImageAction(mask=None)(eqm.groups.Cyclic(4), elements, x)
    v = turned.reshape(x.shape[0], -1, 4, *x.shape[-2:])
    source = (torch.arange(4, device=x.device)[None] - elements[:, :1]).remainder(4)  # orientation o reads o - k
    return v.gather(2, source[:, None, :, None, None].expand_as(v)).reshape(x.shape)


class Lift(nn.Module):
    """Lifting convolution to regular fields: orientation ``o`` of field ``f`` is the image convolved with the
    kernel of ``f`` turned by ``o`` quarter turns (clockwise, as ImageAction turns). Boxed in, boxed out; it declares
    its representations."""

    declares = ("image", "regular")

    def __init__(self, fields: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, fields, 3, padding=1)

    def forward(self, b: Boxed) -> Boxed:
        w = self.conv.weight
        w = torch.stack([torch.rot90(w, -o, (-2, -1)) for o in range(4)], 1).reshape(-1, *w.shape[1:])
        return Boxed(nn.functional.conv2d(b.tensor, w, self.conv.bias.repeat_interleave(4), padding=1))


class GroupPool(nn.Module):
    """Max over each field's orientations: regular fields -> scalar fields. Boxed in, boxed out."""

    declares = ("regular", "image")

    def forward(self, b: Boxed) -> Boxed:
        t = b.tensor
        return Boxed(t.reshape(t.shape[0], -1, 4, *t.shape[-2:]).amax(2))


class Box(nn.Module):
    def forward(self, x: Tensor) -> Boxed:
        return Boxed(x)


class Unbox(nn.Module):
    def forward(self, b: Boxed) -> Tensor:
        return b.tensor


class OrientationScale(nn.Module):
    """A per-channel scale that treats the orientation channels of a field differently: not equivariant on regular
    fields, although it commutes with turning the plane (so it passes if its features were seen as scalar maps)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.linspace(0.5, 2.0, channels)[None, :, None, None])

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def boxed_model(bug: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    parts = [("box", Box()), ("lift", Lift()), ("unbox", Unbox()), ("relu", nn.ReLU())]
    parts += [("scale", OrientationScale(12))] if bug else []
    parts += [("box2", Box()), ("gpool", GroupPool()), ("unbox2", Unbox())]
    parts += [("avg", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("head", nn.Linear(3, 2))]
    return nn.Sequential(OrderedDict(parts)).eval()


def boxed_adapter(module: nn.Module, symmetry) -> FeatureAdapter | None:
    kinds = getattr(module, "declares", None)
    if kinds is None:
        return None
    act = {"image": eqm.actions.ImageAction(mask=None), "regular": eqm.actions.Custom(regular_c4, name="regular")}
    return FeatureAdapter(act[kinds[1]], act[kinds[0]], wrap=Boxed, unwrap=lambda b: b.tensor)


@pytest.fixture
def adapters(monkeypatch):
    """A clean adapter registry for one test (the e3nn integration may have registered its own)."""
    monkeypatch.setattr(layerwise, "_ADAPTERS", [])
    return layerwise._ADAPTERS


def test_adapted_modules_are_measured_with_their_declared_actions(adapters, c4, images):
    layerwise.register_feature_adapter(boxed_adapter)
    layerwise.register_feature_adapter(boxed_adapter)  # once only
    assert adapters == [boxed_adapter]
    res = layer_errors(boxed_model(), images, c4, c4.group.all_elements())
    # adapted modules are atomic (lift.conv is not measured apart); boxed outputs are recorded through `unwrap`
    assert res.names == ["lift", "unbox", "relu", "gpool", "unbox2", "avg", "flatten", "head"]
    assert res.first_failing is None
    assert float(res.cumulative.max()) < 1e-6  # relu/unbox: the regular action, from the adapted producer
    for name in ("lift", "gpool", "relu"):  # isolated tests through wrap/unwrap, and on the propagated action
        assert float(res.isolated[res.names.index(name)].max()) < 1e-6


def test_without_the_adapter_regular_fields_look_broken(adapters, c4, images):
    """The control: the same model seen without its declared representations (boxed modules unmeasured, regular
    fields taken for scalar maps) shows errors that are not there."""
    res = layer_errors(boxed_model(), images, c4, c4.group.all_elements())
    assert "lift" not in res.names and "gpool" not in res.names  # boxed in and out: no tensor to hook
    assert float(res.per_layer("cumulative")[res.names.index("relu")]) > 1e-1


def test_non_equivariant_plain_layer_between_adapted_ones_is_the_first_failing(adapters, c4, images):
    layerwise.register_feature_adapter(boxed_adapter)
    res = layer_errors(boxed_model(bug=True), images, c4, c4.group.all_elements())
    assert res.first_failing == "scale"
    iso, cum = res.per_layer("isolated"), res.per_layer("cumulative")
    assert float(iso[res.names.index("scale")]) > 1e-2
    assert all(float(cum[res.names.index(nm)]) < 1e-6 for nm in ("lift", "unbox", "relu"))
    assert float(iso[res.names.index("gpool")]) < 1e-6  # carries the error, is not its cause


def test_overrides_win_and_the_first_adapter_wins(adapters, c4, images):
    def invariant_lift(module, symmetry):  # a wrong adapter for Lift, registered first
        return FeatureAdapter(eqm.actions.Invariant(), unwrap=lambda b: b.tensor) if isinstance(module, Lift) else None

    layerwise.register_feature_adapter(invariant_lift)
    layerwise.register_feature_adapter(boxed_adapter)
    model = boxed_model()
    res = layer_errors(model, images, c4, c4.group.all_elements())
    lift = res.names.index("lift")
    assert float(res.cumulative[lift].max()) > 1e-1  # judged with the first adapter's (wrong) action
    assert torch.isnan(res.isolated[lift]).all()  # no input action, no producer: no isolated test
    regular = eqm.actions.Custom(regular_c4, name="regular")
    res = layer_errors(model, images, c4, c4.group.all_elements(), feature_actions={"lift": regular, "gpool": "skip"})
    assert float(res.cumulative[res.names.index("lift")].max()) < 1e-6
    assert torch.isnan(res.cumulative[res.names.index("gpool")]).all()


def test_bad_adapters_are_refused(adapters, c4, images):
    with pytest.raises(TypeError, match="callable"):
        layerwise.register_feature_adapter("irreps")
    layerwise.register_feature_adapter(lambda module, symmetry: "an action" if isinstance(module, Lift) else None)
    with pytest.raises(TypeError, match="expected a FeatureAdapter"):
        layer_errors(boxed_model(), images, c4, [1])
    assert isinstance(eqm.actions.Invariant(), Action)
