"""Layer captures for the layer-wise test: forward hooks that see what each layer took and returned, immune to
in-place operations.

A reference kept to a layer's output is overwritten by a later in-place operation (``ReLU(inplace=True)``,
``out += identity`` in a residual block), and a layer's input by the layer itself when it works in place. So:

- the *reference* pass (``keep``) takes each layer's input in a forward **pre**-hook (before the layer runs) and its
  output in the forward hook, and keeps a copy of each, made at once; a tensor already kept and unchanged since
  (same memory, same version counter ``t._version``) is not copied again;
- the *measuring* passes (``measure``) hand each output to a callback inside the hook, before any later module can
  change it: nothing is kept;
- *provenance*: whether a tensor is a kept output itself, or a contiguous reshape of one (``torch.flatten`` or
  ``view`` in ``forward``): same memory, same version counter, the kept tensor still alive (weak references, so that
  the reused address of a freed tensor never matches).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import Tensor, nn

__all__ = ["Recorder"]


@dataclass
class _Kept:
    """A tensor seen by a hook: where it lives, its version then, and the copy made of it."""

    role: str  # "in" or "out"
    name: str
    ref: Any  # weakref.ref to the tensor
    version: int
    shape: tuple
    stride: tuple
    copy: Tensor


def _unwrap_fn(adapter: Any) -> Callable[[Any], Any]:
    fn = getattr(adapter, "unwrap", None)
    return fn if fn is not None else (lambda v: v)


class Recorder:
    """Hooks on ``modules`` (``{name: module}``); ``adapters`` give the ``unwrap`` of adapted modules.

    After a ``keep`` pass: ``order`` (names in forward order, first call of each), ``outputs`` / ``inputs`` (copies;
    an input is ``None`` when the layer was not called with one tensor argument and no keywords), ``producer`` (the
    layer whose output the input is, unchanged), ``reshaped_from`` (the layer whose output the input is a contiguous
    reshape of), ``same_as`` (the layer whose output tensor this layer returned unchanged), ``from_input``
    (``"same"`` / ``"reshape"`` where the output is the layer's own input or a reshape of it, else ``""``) and
    ``kept_bytes``. :meth:`keep_input` registers the model's input under the name ``""``.
    """

    def __init__(self, modules: dict[str, nn.Module], adapters: dict) -> None:
        self.mode = "off"
        self.on_output: Optional[Callable[[str, Tensor], None]] = None
        self.unwraps = {n: _unwrap_fn(adapters.get(n)) for n in modules}
        self.reset()
        self.handles = []
        for n, m in modules.items():
            self.handles.append(m.register_forward_pre_hook(self._pre_hook(n), with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._hook(n), with_kwargs=True))

    def reset(self) -> None:
        """Forget the last pass (call between passes)."""
        self.inputs: dict[str, Optional[Tensor]] = {}
        self.outputs: dict[str, Tensor] = {}
        self.producer: dict[str, Optional[str]] = {}
        self.reshaped_from: dict[str, Optional[str]] = {}
        self.same_as: dict[str, Optional[str]] = {}
        self.from_input: dict[str, str] = {}
        self.order: list[str] = []
        self.calls: dict[str, int] = {}  # calls of each layer in the last "keep" pass (one forward)
        self.kept_bytes = 0
        self._pending: dict[str, tuple] = {}
        self._seen: set = set()
        self._by_ptr: dict[int, list[_Kept]] = {}

    def repeated(self, name: str) -> bool:
        """Whether layer ``name`` runs inside a computation repeated within one forward, e.g. a group average written
        as a loop ``mean_g net(g·x)``: its first call's output is one copy's feature, which need not transform on its
        own while the average does, so it is not measured. The sign: another layer under the same parent module runs
        as many times (> 1). A single module reused at several places (torchvision's ``self.relu`` in a block) is
        measured at its first use: its siblings run once."""
        count = self.calls.get(name, 1)
        if count <= 1:
            return False
        parent = name.rpartition(".")[0]
        prefix = parent + "." if parent else ""
        return any(other != name and other.startswith(prefix) and n == count for other, n in self.calls.items())

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    # ------------------------------------------------------------------------------------------------ keeping
    def _find(self, t: Tensor, role: Optional[str] = None) -> tuple[Optional[_Kept], str]:
        """The latest kept entry holding ``t``'s values now: ``(entry, "same" | "reshape")`` or ``(None, "")``."""
        for k in reversed(self._by_ptr.get(t.data_ptr(), [])):
            if (role and k.role != role) or k.ref() is None or k.version != t._version or k.copy.dtype != t.dtype:
                continue
            if k.shape == tuple(t.shape) and k.stride == tuple(t.stride()):
                return k, "same"
            if (
                k.copy.numel() == t.numel()
                and t.ndim >= 1
                and len(k.shape) >= 1
                and k.shape[0] == t.shape[0]
                and t.is_contiguous()
                and k.copy.is_contiguous()
            ):
                return k, "reshape"
        return None, ""

    def _keep(self, t: Tensor, role: str, name: str) -> tuple[Tensor, Optional[_Kept], str]:
        """A copy of ``t``'s values now (shared with an equal kept one), the kept output it is, and how."""
        src, how = self._find(t, "out")
        if src is None:
            src, how = self._find(t)
        if src is not None:
            copy = src.copy if how == "same" else src.copy.reshape(t.shape)
        else:
            copy = t.detach().clone()
            self.kept_bytes += copy.numel() * copy.element_size()
        entry = _Kept(role, name, weakref.ref(t), t._version, tuple(t.shape), tuple(t.stride()), copy)
        self._by_ptr.setdefault(t.data_ptr(), []).append(entry)
        return copy, (src if src is not None and src.role == "out" else None), how

    def keep_input(self, x: Tensor) -> None:
        """Register the model's input ``x`` (a kept output named ``""``), so that layers reading it know it."""
        self._by_ptr.setdefault(x.data_ptr(), []).append(
            _Kept("out", "", weakref.ref(x), x._version, tuple(x.shape), tuple(x.stride()), x)
        )

    def find_output(self, t: Tensor) -> Optional[str]:
        """The layer (of the last ``keep`` pass) whose output ``t`` is, unchanged since; ``None`` if none."""
        k, how = self._find(t, "out")
        return k.name if k is not None and how == "same" and k.name else None

    def _pre_hook(self, name: str) -> Callable:
        unwrap = self.unwraps[name]

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if self.mode != "keep" or name in self._seen:
                return
            u = unwrap(args[0]) if len(args) == 1 and not kwargs else None
            if not isinstance(u, Tensor):
                self._pending[name] = (None, None, "")
                return
            self._pending[name] = self._keep(u, "in", name)

        return hook

    def _hook(self, name: str) -> Callable:
        unwrap = self.unwraps[name]

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if self.mode == "keep":
                self.calls[name] = self.calls.get(name, 0) + 1
            if self.mode == "off" or name in self._seen:
                return  # first call only (a module reused within a forward is measured at its first use)
            out = unwrap(output)
            if not isinstance(out, Tensor):
                return
            self._seen.add(name)
            if self.mode == "measure":
                if self.on_output is not None:
                    self.on_output(name, out)
                return
            u, src, how = self._pending.pop(name, (None, None, ""))
            self.inputs[name] = u
            self.producer[name] = src.name if src is not None and how == "same" else None
            self.reshaped_from[name] = src.name if src is not None and how == "reshape" else None
            own, how_own = self._find(out, "in")
            self.from_input[name] = how_own if own is not None and own.name == name else ""
            copy, same, how_out = self._keep(out, "out", name)
            self.outputs[name] = copy
            self.same_as[name] = same.name if same is not None and how_out == "same" else None
            self.order.append(name)

        return hook
