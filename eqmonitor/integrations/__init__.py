"""Optional integrations with other equivariance libraries, one subpackage each, named alike.

Each imports its library only when used, so ``import eqmonitor`` (and ``import eqmonitor.integrations``) never needs
them; importing one registers its layer-wise feature adapter:

- :mod:`eqmonitor.integrations.e3nn`: :class:`~eqmonitor.integrations.e3nn.IrrepsAction`,
  ``symmetry_for_e3nn`` / ``symmetry_from_irreps``, ``feature_adapter_for_e3nn`` and ``node_features`` for graph
  networks (``pip install eqmonitor[e3nn]``);
- :mod:`eqmonitor.integrations.escnn`: :class:`~eqmonitor.integrations.escnn.FieldTypeAction`,
  ``symmetry_for_escnn``, ``EscnnTensorModel``, ``feature_adapter_for_escnn`` (``pip install eqmonitor[escnn]``).
"""

__all__: list[str] = []
