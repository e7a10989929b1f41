"""layer_errors: injected bugs are located at their layer; correct models have no failing layer; hooks cleaned up."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import eqmonitor as eqm
from eqmonitor.functional.layerwise import layer_errors


def c4_symmetric(conv: nn.Conv2d) -> nn.Conv2d:
    with torch.no_grad():
        w = conv.weight
        conv.weight.copy_(sum(torch.rot90(w, k, (-2, -1)) for k in range(4)) / 4)
    return conv


@pytest.fixture
def model():
    torch.manual_seed(0)
    return eqm.demos.C4EquivariantCNN().eval()


@pytest.fixture
def x():
    return torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def c4():
    return eqm.Symmetry.from_spec(name="c4", group="c4")


def test_correct_model_has_no_failing_layer(model, x, c4):
    res = layer_errors(model, x, c4, c4.group.all_elements())
    assert res.names == ["conv1", "act1", "conv2", "act2", "conv3", "act3", "pool", "flatten", "head"]
    assert res.cumulative.shape == res.isolated.shape == (9, 8, 4)
    assert res.first_failing is None
    assert float(res.cumulative.max()) < 1e-6 and float(res.isolated.nan_to_num().max()) < 1e-6


@pytest.mark.parametrize(
    "bug",
    [
        pytest.param(lambda: nn.Conv2d(8, 8, 3, padding=1), id="asymmetric-kernel"),
        pytest.param(lambda: c4_symmetric(nn.Conv2d(8, 8, 3, padding=1, stride=2)), id="strided-even-size"),
    ],
)
def test_injected_bug_is_the_first_failing_layer(model, x, c4, bug):
    torch.manual_seed(2)
    model.conv2 = bug()
    res = layer_errors(model, x, c4, c4.group.all_elements())
    assert res.first_failing == "conv2"
    iso = res.per_layer("isolated")
    assert float(iso[res.names.index("conv2")]) > 1e-2
    for earlier in ("conv1", "act1"):  # nothing before the bug is blamed
        assert float(res.per_layer("cumulative")[res.names.index(earlier)]) < 1e-6
    for later in ("act2", "conv3", "act3"):  # later layers carry the error but are not its cause
        assert float(res.per_layer("cumulative")[res.names.index(later)]) > 1e-3
        assert float(iso[res.names.index(later)]) < 1e-6


def test_interpolated_elements_do_not_blame_layers_when_exact_ones_exist(model, x):
    so2 = eqm.Symmetry.from_spec(name="rotation", group="so2")
    res = layer_errors(model, x, so2, so2.group.grid(8))
    assert res.first_failing is None  # judged on the four exact quarter turns
    assert float(res.cumulative[:, :, ~res.exact].nanmean()) > 1e-3  # interpolation error is still reported


def test_shift_scaled_to_feature_resolution():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular"), nn.AvgPool2d(2))
    sym = eqm.Symmetry(
        group=eqm.groups.Translation2d(max_shift=4),
        input_action=eqm.actions.ImageAction(padding="circular"),
        output_action=eqm.actions.ImageAction(padding="circular"),
        name="shift",
    )
    x = torch.randn(3, 1, 8, 8)
    res = layer_errors(net, x, sym, torch.tensor([[2.0, 0.0], [0.0, -2.0], [2.0, 2.0]]))
    assert float(res.cumulative.max()) < 1e-6  # an even shift is a whole-pixel shift after 2× pooling


def test_overrides_and_layer_selection(model, x, c4):
    res = layer_errors(model, x, c4, [1], layers=["conv1", "head"], feature_actions={"head": "skip"})
    assert res.names == ["conv1", "head"]
    assert torch.isnan(res.cumulative[1]).all()
    with pytest.raises(ValueError, match="Unknown layer names"):
        layer_errors(model, x, c4, [1], layers=["conv9"])


def test_hooks_removed_and_model_untouched_even_on_error(model, x, c4):
    model.train()
    before = copy.deepcopy(model.state_dict())
    layer_errors(model, x, c4, c4.group.all_elements())
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model.act2 = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        layer_errors(model, x, c4, [1])
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training


def test_isolated_errors_do_not_depend_on_the_chunking(model, x):
    """Input and output actions are planned once per call and indexed per chunk: chunks that cut through elements (7)
    or hold everything (1000) give the same errors, on interpolated elements too."""
    so2 = eqm.Symmetry.from_spec(name="rotation", group="so2")
    torch.manual_seed(3)
    model.conv2 = nn.Conv2d(8, 8, 3, padding=1)  # errors well above zero, so a wrongly indexed element shows
    elements = so2.group.grid(6)
    small = layer_errors(model, x, so2, elements, max_batch=7)
    whole = layer_errors(model, x, so2, elements, max_batch=1000)
    assert float(whole.isolated.nan_to_num().max()) > 1e-2
    torch.testing.assert_close(small.isolated, whole.isolated, rtol=1e-5, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(small.cumulative, whole.cumulative, rtol=1e-5, atol=1e-6)


# ============================================================================= BatchNorm in train mode (mode="train")
def with_batchnorm(model: nn.Module, momentum=0.1) -> nn.Module:
    """``conv2 -> BatchNorm2d`` with non-trivial affine parameters and running statistics (so that eval mode is a
    real per-channel affine map, which is C4-equivariant on scalar channels)."""
    torch.manual_seed(4)
    bn = nn.BatchNorm2d(8, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    model.conv2 = nn.Sequential(model.conv2, bn)
    return model


@pytest.fixture
def x_varied():
    """Samples with different brightness and contrast, so that the statistics of a subset differ from the batch's."""
    g = torch.Generator().manual_seed(5)
    scale, offset = torch.linspace(0.5, 2.0, 8).reshape(8, 1, 1, 1), torch.linspace(-1.0, 1.0, 8).reshape(8, 1, 1, 1)
    return torch.randn(8, 1, 16, 16, generator=g) * scale + offset


def test_batchnorm_in_train_mode_on_mixed_orientation_chunks_is_the_first_failing_layer(model, x_varied, c4):
    """BatchNorm in train mode normalises with the statistics of the batch it is given.

    The model's channels are scalar fields, so a channel's mean and variance over one sample's pixels do not change
    when that sample is turned by a quarter turn. Hence a batch holding the N samples, each at *any* orientation (or
    each sample the same number of times, e.g. all 4 rotations of the batch), has exactly the reference batch's
    statistics, and train-mode BatchNorm stays equivariant: ``max_batch = N`` (each chunk: the batch at one element)
    and ``max_batch = 4N`` (one chunk: all four rotations) find no failing layer, a real property of this layer, not
    a blind spot. With ``max_batch = 12`` and ``N = 8`` (pairs are element-major), chunk 0 holds the 8 samples at the
    identity *and* samples 0-3 at 90°, chunk 1 samples 4-7 at 90° and the 8 at 180°, chunk 2 the 8 at 270°: batches
    of mixed orientations whose sample mix differs from the reference batch, so their statistics differ and the
    layer's output for a sample depends on what else is in its batch. Those pairs fail, even at the identity element;
    the whole-batch chunk at 270° does not.
    """
    with_batchnorm(model)
    res = layer_errors(model, x_varied, c4, c4.group.all_elements(), max_batch=12, mode="train")
    assert res.mode == "train"
    assert res.first_failing == "conv2.1"
    bn, iso, cum = res.names.index("conv2.1"), res.isolated, res.cumulative
    assert float(iso[bn, :, :3].min()) > 1e-3  # every pair in a mixed chunk, the identity element included
    assert float(iso[bn, :, 3].max()) < 1e-6  # the chunk that is the whole batch at 270°
    for earlier in ("conv1", "act1", "conv2.0"):  # nothing before the BatchNorm is blamed, nor shows any error
        assert float(cum[res.names.index(earlier)].max()) < 1e-6
        assert float(iso[res.names.index(earlier)].nan_to_num().max()) < 1e-6
    for later in ("act2", "conv3", "act3"):  # later layers carry the error, but are not its cause
        assert float(cum[res.names.index(later)].max()) > 1e-3
        assert float(iso[res.names.index(later)].max()) < 1e-6

    for whole_orbits in (8, 32):  # chunks with the reference batch's statistics: equivariant, as argued above
        res = layer_errors(model, x_varied, c4, c4.group.all_elements(), max_batch=whole_orbits, mode="train")
        assert res.first_failing is None
        assert float(res.isolated.nan_to_num().max()) < 1e-6


def test_batchnorm_in_eval_mode_has_no_failing_layer(model, x_varied, c4):
    """The same model probed in eval mode (the default, whatever the model's own flags) uses its running
    statistics: a per-channel affine map, equivariant on scalar channels."""
    with_batchnorm(model).train()
    for kwargs in ({}, {"mode": "eval"}):
        res = layer_errors(model, x_varied, c4, c4.group.all_elements(), max_batch=12, **kwargs)
        assert res.mode == "eval" and res.first_failing is None
        assert float(res.cumulative.max()) < 1e-6 and float(res.isolated.nan_to_num().max()) < 1e-6
    assert model.training  # its own flag is back


def test_train_mode_probe_leaves_no_trace(model, x_varied, c4):
    """Buffers (running statistics, ``num_batches_tracked``, as the same tensors), parameters, ``.grad``, every
    module's own flag and the RNG are exactly as before a train-mode probe, which did run in train mode."""
    with_batchnorm(model)
    model.act2 = nn.Sequential(nn.BatchNorm2d(8, momentum=None), nn.ReLU())  # cumulative averaging
    model.train()
    model.conv1.eval()  # mixed flags must come back as they were
    model.act2[0].eval()
    model(x_varied).sum().backward()  # non-trivial .grad and num_batches_tracked
    state = {k: v.clone() for k, v in model.state_dict(keep_vars=True).items()}
    objects = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    flags = {n: m.training for n, m in model.named_modules()}
    rng = torch.get_rng_state()

    res = layer_errors(model, x_varied, c4, c4.group.all_elements(), max_batch=12, mode="train")
    assert res.first_failing == "conv2.1"  # the probe did use batch statistics

    after = model.state_dict(keep_vars=True)
    assert all(after[k] is objects[k] and torch.equal(after[k], v) for k, v in state.items())
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(not m._forward_hooks for m in model.modules())


def test_dropout_stays_off_in_train_mode(model, x, c4):
    """A random dropout mask is not a symmetry bug: train mode keeps dropout modules in eval."""
    model.act1 = nn.Sequential(nn.ReLU(), nn.Dropout(0.5), nn.Dropout2d(0.5))
    res = layer_errors(model, x, c4, c4.group.all_elements(), mode="train")
    assert res.first_failing is None
    assert float(res.cumulative.max()) < 1e-6
    with pytest.raises(ValueError, match="Expected `mode`"):
        layer_errors(model, x, c4, [1], mode="training")


def test_layers_inside_a_batch_stacking_wrapper_are_not_measured(c4):
    # GroupAveraged runs its inner model on the |G| copies of each sample stacked into one batch: those layers have
    # no per-sample features to compare (their batch is |G|·N), so they are reported as not measured, not a crash
    torch.manual_seed(0)
    model = eqm.demos.GroupAveraged(eqm.demos.SmallCNN(size=12, width=4), eqm.groups.Cyclic(4)).eval()
    res = layer_errors(model, torch.randn(3, 1, 12, 12), c4, c4.group.all_elements())
    assert res.names[0] == "model.features.0" and res.cumulative.shape == (len(res.names), 3, 4)
    assert res.cumulative.isnan().all() and res.isolated.isnan().all() and res.first_failing is None
