"""Actions of groups on tensors: images, vector fields, points, sets, annotations, and user-defined ones."""

from eqmonitor.actions.annotations import Boxes, Keypoints
from eqmonitor.actions.base import Action, Custom, Invariant, Representation
from eqmonitor.actions.fields import VectorField
from eqmonitor.actions.image import ImageAction, RotateImage, disc_mask, transform_image
from eqmonitor.actions.permutation import Permute
from eqmonitor.actions.points import Points, Vectors

__all__ = [
    "Action",
    "Boxes",
    "Custom",
    "ImageAction",
    "Invariant",
    "Keypoints",
    "Permute",
    "Points",
    "Representation",
    "RotateImage",
    "VectorField",
    "Vectors",
    "disc_mask",
    "transform_image",
]
