"""Exact 90° rotations of the voxel box: axis permutations with flips, no interpolation.

A rotation of the cube is a signed permutation matrix with determinant +1 (24 of
them). Applied to a map it is ``transpose(perm)`` followed by flips; the box is
centred on the cell centre, so the result is exactly the encoding of the rotated
crystal (sites at fractional f map to 1 - f along flipped axes). Cell lengths are
permuted with the axes, and the coordinate grid is rebuilt from them (for a cubic
cell it is unchanged).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np


class Rotation(NamedTuple):
    perm: tuple[int, int, int]
    flips: tuple[bool, bool, bool]


def cube_rotations() -> list[Rotation]:
    """The 24 proper rotations of the cube, identity first."""
    out = []
    for perm in itertools.permutations(range(3)):
        for flips in itertools.product([False, True], repeat=3):
            m = np.zeros((3, 3))
            for new_axis, old_axis in enumerate(perm):
                m[new_axis, old_axis] = -1.0 if flips[new_axis] else 1.0
            if np.linalg.det(m) > 0:
                out.append(Rotation(tuple(perm), tuple(flips)))
    return out


_ROTATIONS = cube_rotations()

# rotations the UNet's predictions are averaged over at inference (icsg.generation.pipeline.segment_maps)
TTA_ROTATIONS = 4


def rotate_map(volume: np.ndarray, rot: Rotation) -> np.ndarray:
    """Rotate a (n, n, n) or (n, n, n, C) array; trailing channel axes are kept."""
    volume = np.asarray(volume)
    axes = list(rot.perm) + list(range(3, volume.ndim))
    out = volume.transpose(axes)
    flip_axes = tuple(i for i, f in enumerate(rot.flips) if f)
    return np.flip(out, axis=flip_axes) if flip_axes else out


def unrotate_map(volume: np.ndarray, rot: Rotation) -> np.ndarray:
    """Inverse of ``rotate_map``: a map predicted in the rotated frame, back in the original one."""
    volume = np.asarray(volume)
    flip_axes = tuple(i for i, f in enumerate(rot.flips) if f)
    out = np.flip(volume, axis=flip_axes) if flip_axes else volume
    return out.transpose(list(np.argsort(rot.perm)) + list(range(3, volume.ndim)))


def rotate_lengths(abc: np.ndarray, rot: Rotation) -> np.ndarray:
    return np.asarray(abc)[list(rot.perm)]


def random_rotation(rng: np.random.Generator) -> Rotation:
    return _ROTATIONS[int(rng.integers(len(_ROTATIONS)))]
