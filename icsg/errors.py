"""Errors that name the item (file, row, structure) and the reason."""

from __future__ import annotations


class CrystalError(ValueError):
    """A crystal that cannot be used, with the item it came from and why.

    ``reason`` is a short machine-readable tag (``malformed_cif``, ``disordered``,
    ``non_cubic``, ``too_many_atoms``, ``no_radius``, ...) so batch jobs can count
    rejections; ``detail`` is the human sentence.
    """

    def __init__(self, item: str, reason: str, detail: str = ""):
        self.item = str(item)
        self.reason = reason
        self.detail = detail
        msg = f"{self.item}: {reason}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.item, self.reason, self.detail))


class SourceError(ValueError):
    """A data source (file, folder, query) that cannot be read at all."""


class WeightsError(RuntimeError):
    """Missing, corrupt or mismatched model weights."""
