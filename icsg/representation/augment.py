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


class PeriodicMove(NamedTuple):
    """An exact symmetry of a periodic grid over the unit cell: inversion through the origin (voxel i ->
    n - 1 - i), then a translation by ``shift`` voxels. The lattice and the coordinate channels stay; the
    crystal's origin moves, which is the one choice the canonical cell leaves free (and its hand, which
    inversion swaps)."""

    shift: tuple[int, int, int]
    invert: bool


def random_periodic_move(rng: np.random.Generator, n: int) -> PeriodicMove:
    return PeriodicMove(tuple(int(k) for k in rng.integers(0, n, 3)), bool(rng.integers(0, 2)))


def move_periodic_map(a: np.ndarray, move: PeriodicMove) -> np.ndarray:
    """The map (n, n, n, ...) of the moved crystal."""
    if move.invert:
        a = a[::-1, ::-1, ::-1]
    return np.roll(a, move.shift, axis=(0, 1, 2))


def move_fractions(frac: np.ndarray, move: PeriodicMove, n: int) -> np.ndarray:
    """Fractional coordinates (..., 3) of the moved crystal's sites, in [0, 1)."""
    f = -np.asarray(frac) if move.invert else np.asarray(frac)
    return np.mod(f + np.asarray(move.shift) / n, 1.0)
