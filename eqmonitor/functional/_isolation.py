"""Zero interference: run probes on a model without changing anything a training loop can observe.

Inside :func:`isolated`, every module is in eval mode, gradients are off (unless asked for), TF32 and autocast are
off, and the global RNG streams (CPU and the model's CUDA device) are forked. On exit, each module's own ``training``
flag, the precision settings and the RNG states are restored exactly as found (never a bare ``.train()``).

Most modules get their flag set directly. A module that overrides ``train`` gets its own ``m.train(flag)`` instead,
because its mode can be more than a flag: escnn's convolutions build and cache their filter in ``train(False)`` and
delete it in ``train(True)``; a frozen-backbone model keeps its backbone in eval mode. Its subtree is left to that
call (dropouts still stay off in train mode). Everything such a call can change on those modules is put back on exit:
the buffers (the same tensor objects), the plain attributes, the parameters' ``requires_grad`` and the flags, so no
library needs to patch around flag flips.

``train=True`` runs the probe in train mode instead (normalisation layers use batch statistics): every module is
put in train mode except dropouts and attention (a random mask is not a symmetry bug), and every buffer (BatchNorm
running statistics, ``num_batches_tracked``) is snapshotted before and restored bit-exactly after, as the same tensor
object.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Callable, Iterator, Optional

import torch
from torch import nn


def model_device(model: Callable, fallback: Optional[torch.device] = None) -> torch.device:
    """The device of the model's first parameter or buffer, else ``fallback`` (CPU)."""
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return fallback if fallback is not None else torch.device("cpu")


def model_dtype(model: Callable) -> Optional[torch.dtype]:
    """The dtype of the model's first floating-point parameter or buffer, ``None`` if it has none."""
    if isinstance(model, nn.Module):
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                return t.dtype
    return None


def _strict_precision() -> Callable[[], None]:
    """Switch TF32 off for matmuls and convolutions; return a function that restores the previous settings."""
    cuda_matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    try:
        saved = (cuda_matmul.allow_tf32, cudnn.allow_tf32, torch.get_float32_matmul_precision())

        def restore() -> None:
            cuda_matmul.allow_tf32, cudnn.allow_tf32 = saved[0], saved[1]
            torch.set_float32_matmul_precision(saved[2])

        cuda_matmul.allow_tf32 = cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    except RuntimeError:  # the settings were made through the newer `fp32_precision` API: use it throughout
        targets = [cuda_matmul, cudnn.conv, cudnn.rnn]
        saved_new = [t.fp32_precision for t in targets]

        def restore() -> None:
            for t, value in zip(targets, saved_new):
                t.fp32_precision = value

        for t in targets:
            t.fp32_precision = "ieee"
    return restore


#: modules kept in eval mode by ``train=True``: their train mode only draws random masks (dropout, and the attention
#: dropout of ``nn.MultiheadAttention``)
_NEVER_TRAIN = (nn.modules.dropout._DropoutNd, nn.MultiheadAttention)


def _snapshot_buffers(modules: list) -> Callable[[], None]:
    """Copy every buffer of ``modules``; return a function that puts back the same tensors with the same values."""
    saved = [
        (m, dict(m._buffers), {k: b.detach().clone() for k, b in m._buffers.items() if b is not None}) for m in modules
    ]

    def restore() -> None:
        with torch.no_grad():
            for m, objects, values in saved:
                m._buffers.clear()
                m._buffers.update(objects)
                for k, v in values.items():
                    objects[k].copy_(v)

    return restore


def _overrides_train(module: nn.Module) -> bool:
    return type(module).train is not nn.Module.train


def _snapshot_train_state(modules: list) -> Callable[[], None]:
    """Record what a module's own ``train`` may change (buffers, non-persistent names, plain attributes, the
    parameters' ``requires_grad``); return a function that puts it back."""
    saved = [
        (
            m,
            dict(m._buffers),
            set(m._non_persistent_buffers_set),
            dict(m.__dict__),
            [(p, p.requires_grad) for p in m.parameters()],
        )
        for m in modules
    ]

    def restore() -> None:
        for m, buffers, non_persistent, attributes, grads in saved:
            m._buffers.clear()
            m._buffers.update(buffers)
            m._non_persistent_buffers_set.clear()
            m._non_persistent_buffers_set.update(non_persistent)
            for k in [k for k in m.__dict__ if k not in attributes]:
                del m.__dict__[k]
            for k, v in attributes.items():
                if m.__dict__.get(k, _MISSING) is not v:
                    m.__dict__[k] = v
            for p, flag in grads:
                p.requires_grad_(flag)

    return restore


_MISSING = object()


def _set_modes(modules: list, train: bool) -> None:
    """Every module in eval mode (``train=False``) or in train mode but dropouts and attention; modules that override
    ``train`` get their own call, and decide their subtree (see the module docstring)."""
    handled: set = set()
    for m in modules:
        if id(m) in handled or not _overrides_train(m):
            continue
        m.train(train)  # while its flag still says where it comes from: escnn expands a filter only from train mode
        handled.update(id(sub) for sub in m.modules())
    for m in modules:
        if id(m) not in handled or (train and isinstance(m, _NEVER_TRAIN)):
            m.training = train and not isinstance(m, _NEVER_TRAIN)


@contextmanager
def isolated(model: Callable, *, grad: bool = False, eval_mode: bool = True, train: bool = False) -> Iterator[None]:
    """Context in which probing ``model`` leaves no trace: see the module docstring.

    Args:
        grad: keep autograd on (gradient tests).
        eval_mode: put every module in eval mode (the default).
        train: put every module but dropouts and attention in train mode instead, buffers restored on exit.
    """
    device = model_device(model)
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    flags = [m.training for m in modules]
    restore_buffers = _snapshot_buffers(modules) if train else None
    overriding = [sub for m in modules if _overrides_train(m) for sub in m.modules()] if train or eval_mode else []
    restore_train_state = _snapshot_train_state(list({id(m): m for m in overriding}.values())) if overriding else None
    restore_precision = _strict_precision()
    try:
        with ExitStack() as stack:
            stack.enter_context(torch.random.fork_rng(devices=[device] if device.type == "cuda" else []))
            if device.type in ("cpu", "cuda"):
                stack.enter_context(torch.autocast(device.type, enabled=False))
            stack.enter_context(torch.set_grad_enabled(grad))
            if train or eval_mode:
                _set_modes(modules, train)
            yield
    finally:
        if restore_train_state is not None:
            restore_train_state()
        for m, flag in zip(modules, flags):
            m.training = flag
        if restore_buffers is not None:
            restore_buffers()
        restore_precision()
