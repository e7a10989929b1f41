"""Groups from spec names (``"so2"``, ``"c4"``, ``"d4"``, ...), for configs."""

from __future__ import annotations

from eqmonitor.groups.base import Group
from eqmonitor.groups.cyclic import Cyclic
from eqmonitor.groups.dihedral import Dihedral
from eqmonitor.groups.flip import Flip
from eqmonitor.groups.o3 import O3
from eqmonitor.groups.permutation import Permutation
from eqmonitor.groups.scale import Scale
from eqmonitor.groups.so2 import SO2
from eqmonitor.groups.so3 import SO3
from eqmonitor.groups.translation import Translation

__all__ = ["group_from_spec"]


def group_from_spec(spec: str, **kwargs) -> Group:
    """A group from its spec name: ``"so2"``, ``"c4"``, ``"d4"``, ``"flip"``, ``"vflip"``, ``"translation"``,
    ``"translation3d"``, ``"scale"``, ``"so3"``, ``"o3"``, ``"s5"`` (``Permutation(5)``); ``kwargs`` go to the class.
    """
    s = spec.strip().lower()
    fixed: dict[str, type[Group] | object] = {"so2": SO2, "so3": SO3, "o3": O3, "scale": Scale}
    if s in fixed:
        return fixed[s](**kwargs)  # type: ignore[operator]
    if s in ("flip", "hflip", "mirror"):
        return Flip("horizontal", **kwargs)
    if s == "vflip":
        return Flip("vertical", **kwargs)
    if s in ("translation", "translation2d", "shift"):
        return Translation(2, **kwargs)
    if s in ("translation3d", "translation1d"):
        return Translation(int(s[-2]), **kwargs)
    for prefix, cls in (("c", Cyclic), ("d", Dihedral), ("s", Permutation)):
        if s.startswith(prefix) and s[1:].isdigit():
            return cls(int(s[1:]), **kwargs)
    if s in ("permutation", "perm") and "n" in kwargs:
        return Permutation(**kwargs)
    raise ValueError(
        f"Unknown group spec {spec!r}. Use one of 'so2', 'c<n>', 'd<n>', 'flip', 'vflip', 'translation', "
        "'translation3d', 'scale', 'so3', 'o3', 's<n>' (or 'permutation' with n=...)."
    )
