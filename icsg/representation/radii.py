"""Ionic radius per element: the Gaussian width of eq. 1 and the label radius of eqs. 2-3.

Values are pymatgen's ``Element.average_ionic_radius`` (mean of the Shannon radii
over the element's oxidation states, Å). Elements without any Shannon radius
(noble gases, some actinides) have no width; by default they are rejected with a
clear reason, or a caller may pass ``fallback_A`` (the original code used 1.2 Å).
"""

from __future__ import annotations

from functools import lru_cache

from pymatgen.core import Element

from icsg.errors import CrystalError


@lru_cache(maxsize=None)
def _shannon_mean_A(symbol: str) -> float:
    try:
        el = Element(symbol)
    except ValueError:
        return float("nan")
    return float(el.average_ionic_radius)


def ionic_radius_A(symbol: str, fallback_A: float | None = None, item: str = "") -> float:
    """Mean Shannon ionic radius (Å) of ``symbol``; raises CrystalError if unknown."""
    r = _shannon_mean_A(symbol)
    if r != r:  # NaN: not an element at all
        raise CrystalError(item or symbol, "unknown_element", f"'{symbol}' is not a chemical element")
    if r <= 0:
        if fallback_A is not None:
            return float(fallback_A)
        raise CrystalError(item or symbol, "no_radius", f"element {symbol} has no Shannon ionic radius")
    return r


def has_radius(symbol: str) -> bool:
    r = _shannon_mean_A(symbol)
    return r == r and r > 0
