"""Groups: elements as batched tensors, sampling, plot grids, laws, and which elements act exactly on a pixel grid.

Every group stores its elements as a tensor ``[K, p]`` (``p = group.param_dim``), one element per row, and implements
its laws (``compose``, ``inverse``, ``identity``) as batched tensor functions on the elements' device. Continuous
parameters are ``float64`` (an angle in radians, a shift in pixels, a log-scale, a flattened rotation matrix); discrete
ones are ``int64`` (a rotation index, a flip bit, a permutation).

Groups that act on the plane or on space also give each element's geometry, which the actions use:
``matrix(elements) -> [K, d, d]`` and ``translation(elements) -> [K, d]`` (pixels for images), so that one image action
serves rotations, flips, shifts and scalings alike. The plane's frame is the array frame of ``grid_sample``: ``x``
runs along the width (columns, to the right), ``y`` along the height (rows, downward), and a positive angle turns
``+x`` towards ``+y`` (clockwise as an image is usually drawn, rows going down).

One module per group (``so2``, ``cyclic``, ``dihedral``, ``flip``, ``translation``, ``scale``, ``so3``, ``o3``,
``permutation``) on the shared base (``base``: :class:`Group`); ``spec`` builds them from names.
"""

from eqmonitor.groups.base import Group, is_signed_permutation
from eqmonitor.groups.cyclic import Cyclic
from eqmonitor.groups.dihedral import Dihedral
from eqmonitor.groups.flip import Flip
from eqmonitor.groups.o3 import O3
from eqmonitor.groups.permutation import Permutation
from eqmonitor.groups.scale import Scale
from eqmonitor.groups.so2 import SO2
from eqmonitor.groups.so3 import SO3
from eqmonitor.groups.spec import group_from_spec
from eqmonitor.groups.translation import Translation, Translation2d

__all__ = [
    "Cyclic",
    "Dihedral",
    "Flip",
    "Group",
    "O3",
    "Permutation",
    "SO2",
    "SO3",
    "Scale",
    "Translation",
    "Translation2d",
    "group_from_spec",
    "is_signed_permutation",
]
