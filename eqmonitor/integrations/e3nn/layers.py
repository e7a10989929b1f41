"""The layer-wise feature adapter of e3nn modules, and node features of graph and point networks.

Every module that declares ``irreps_out`` and ``irreps_in`` (or ``irreps_in1`` / ``irreps_in2``) is one layer,
measured with the actions of its irreps (a ``Gate``'s inner modules are not measured apart).

**Graph and point networks** (e3nn's ``gate_points`` models and the like) run their layers on the *node features*
of all the samples of a forward at once, ``[num_nodes, dim]`` with ``num_nodes = B · N`` for ``B`` clouds of ``N``
points: there is no row per sample to compare. :func:`node_features` declares ``N`` for a network; its layers' node
features are then measured per sample as ``[B, N, dim]``, on which ``IrrepsAction`` acts row by row. A module that
contains e3nn graph convolutions (a module declaring ``irreps_edge_attr``: the network itself, gate_points'
``Compose``) is not one layer: its convolutions and gates are measured one by one, so that a broken gate is named
(its isolated test runs on its own node features; convolutions, which take several inputs, are measured on their
output only). A graph convolution whose network was not declared raises a clear error when it is measured.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Optional

from torch import Tensor, nn

from eqmonitor.functional.layerwise import FeatureAdapter
from eqmonitor.integrations.e3nn.symmetry import _action_for
from eqmonitor.symmetry import Symmetry

__all__ = ["feature_adapter_for_e3nn", "node_features"]

#: the examples need e3nn (honoured by the project's conftest, as by pytest-doctestplus)
__doctest_requires__ = {("*",): ["e3nn"]}

#: module -> nodes per sample, for every module of a network declared with `node_features`
_NODES: "weakref.WeakKeyDictionary[nn.Module, int]" = weakref.WeakKeyDictionary()


def node_features(network: nn.Module, nodes_per_sample: int) -> nn.Module:
    """Declare that the e3nn layers of ``network`` work on node features ``[B · nodes_per_sample, dim]``.

    The rows of a forward's node features are its samples' nodes, sample by sample (``batch = [0]*N + [1]*N + …``,
    as a model that flattens ``[B, N, 3]`` clouds builds it), so the layer-wise test reads them as ``[B, N, dim]``.
    The declaration is kept beside the network (nothing is added to it; a copy of the network is not declared).

    Args:
        network: the graph network (or any module whose e3nn layers take node features).
        nodes_per_sample: ``N``, the number of nodes of each sample (clouds of equal size).

    Returns:
        ``network``, so that the declaration can wrap its construction.

    Raises:
        TypeError: ``network`` is not a module, or ``nodes_per_sample`` is not a positive integer.

    Example:
        >>> from e3nn import o3
        >>> from eqmonitor.integrations.e3nn import feature_adapter_for_e3nn, node_features, symmetry_from_irreps
        >>> import torch
        >>> gate_like = node_features(o3.Linear("1x1o", "1x1o"), nodes_per_sample=4)
        >>> adapter = feature_adapter_for_e3nn(gate_like, symmetry_from_irreps("1x1o", "1x1o"))
        >>> adapter.unwrap(torch.zeros(8, 3)).shape  # two samples of 4 nodes
        torch.Size([2, 4, 3])
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"Expected `network` to be a torch.nn.Module, got {type(network).__name__}.")
    if isinstance(nodes_per_sample, bool) or not isinstance(nodes_per_sample, int) or nodes_per_sample < 1:
        raise TypeError(f"Expected `nodes_per_sample` to be a positive int, got {nodes_per_sample!r}.")
    for m in network.modules():
        _NODES[m] = nodes_per_sample
    return network


def _is_graph_convolution(module: nn.Module) -> bool:
    return hasattr(module, "irreps_edge_attr")


def _contains_graph_convolution(module: nn.Module) -> bool:
    return any(_is_graph_convolution(m) for name, m in module.named_modules() if name)


def _per_sample(nodes: int, label: str) -> Callable[[Any], Any]:
    def unwrap(value: Any) -> Any:
        if not isinstance(value, Tensor):
            return value
        if value.ndim < 1 or value.shape[0] % nodes:
            raise ValueError(
                f"{label} returned node features of shape {tuple(value.shape)}, which are not samples of "
                f"{nodes} nodes each (declared with `node_features(network, nodes_per_sample={nodes})`). Declare the "
                "number of nodes of each sample; clouds of different sizes cannot be split per sample."
            )
        return value.reshape(-1, nodes, *value.shape[1:])

    return unwrap


def _undeclared(label: str) -> Callable[[Any], Any]:
    def unwrap(value: Any) -> Any:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"{label} is an e3nn graph layer: its output {shape} holds the node features [num_nodes, dim] of all the "
            "samples of a forward, not one row per sample, so it cannot be compared sample by sample. Declare how "
            "many nodes each sample has, `eqmonitor.integrations.e3nn.node_features(network, nodes_per_sample=N)` "
            "(clouds of N points), then its node features are measured per sample with the layer's irreps."
        )

    return unwrap


def _flatten_nodes(value: Tensor) -> Tensor:
    return value.reshape(-1, *value.shape[2:])


def feature_adapter_for_e3nn(module: nn.Module, symmetry: Symmetry) -> Optional[FeatureAdapter]:
    """The layer-wise :class:`~eqmonitor.functional.layerwise.FeatureAdapter` of an e3nn-style module, or ``None``.

    A module with ``irreps_out`` and ``irreps_in`` (``o3.Linear``, ``nn.Gate``, ``o3.Norm`` …) or ``irreps_in1`` /
    ``irreps_in2`` (tensor products, measured on their output only) under a group acting on 3D space gets
    ``IrrepsAction(irreps_out)`` on its output and, with one input, ``IrrepsAction(irreps_in)`` on it (all-``0e``
    irreps and ``None``: invariant; ``"cartesian_points"``: :class:`~eqmonitor.actions.Points`). Other modules,
    irreps that are not one valid spec (several outputs), and modules that contain graph convolutions get ``None``.
    Modules of a network declared with :func:`node_features` read their node features per sample (``unwrap``:
    ``[B · N, dim] -> [B, N, dim]``, ``wrap`` back).

    Example:
        >>> from e3nn import o3
        >>> from eqmonitor.integrations.e3nn import feature_adapter_for_e3nn, symmetry_from_irreps
        >>> adapter = feature_adapter_for_e3nn(o3.Linear("1x1o", "2x0e"), symmetry_from_irreps("1x1o", "2x0e"))
        >>> adapter.input_action, adapter.output_action
        (IrrepsAction('1x1o'), Invariant())
    """
    if symmetry.group.space_dim != 3 or not hasattr(module, "irreps_out"):
        return None
    several = hasattr(module, "irreps_in1") or hasattr(module, "irreps_in2")
    if not several and not hasattr(module, "irreps_in"):
        return None
    if _contains_graph_convolution(module):  # a network of graph layers: measured layer by layer
        return None
    try:
        output_action = _action_for(module.irreps_out, "out")
    except (NotImplementedError, ValueError):  # several outputs, or not irreps: not an e3nn module we can measure
        return None
    try:
        input_action = None if several else _action_for(module.irreps_in, "in")
    except (NotImplementedError, ValueError):  # several inputs: the output is still measured
        input_action = None
    label = f"`{type(module).__name__}`"
    nodes = _NODES.get(module)
    if nodes is not None:
        unwrap, wrap = _per_sample(nodes, label), _flatten_nodes
    elif _is_graph_convolution(module):
        unwrap, wrap = _undeclared(label), None
    else:
        unwrap = wrap = None
    return FeatureAdapter(output_action=output_action, input_action=input_action, wrap=wrap, unwrap=unwrap)
