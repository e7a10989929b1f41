"""Optional integrations with other equivariance libraries.

Each integration lives in its own submodule and imports its library only when used, so ``import eqmonitor`` (and
``import eqmonitor.integrations``) never needs them:

- :mod:`eqmonitor.integrations.e3nn`: actions and symmetries from e3nn ``Irreps`` (``pip install eqmonitor[e3nn]``).
- :mod:`eqmonitor.integrations.escnn`: actions and symmetries from escnn ``FieldType`` s, and escnn's
  ``GeometricTensor`` layers in the layer-wise probe (``pip install eqmonitor[escnn]``).
"""

__all__: list[str] = []
