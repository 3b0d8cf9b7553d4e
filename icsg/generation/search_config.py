"""Settings of the exact reading's search through the encoder (``icsg.generation.consistency``): what each
move of the search tries, how far, and when the search stops."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConsistencyConfig:
    """Search of the round-trip refinement.

    Args:
        top_k: elements tried per site: the segmenter's ``top_k`` most probable (site class probabilities).
        spare_k: elements tried at a spare position (``Sites.spare_vox``).
        rounds: alternations of site moves and cell scan.
        species_passes: passes of site moves per round (element changes; from the second round also sites
            removed or added); each pass keeps the best move per crystal.
        cell_span, cell_steps: isotropic cell scan over factors 1 ± cell_span, then a parabola through the
            best three; off (0) because the cell read from the code is closer than what the scan finds.
        axis_span, axis_steps: the same per axis, after the isotropic scan (off, as above).
        batch_size: maps per encoder call.
        soft_steps, soft_top_k: Adam steps of the soft fit that precedes the search
            (``icsg.generation.soft_fit``; 0 = none) and the elements each site's softmax spans.
        group_moves: also try every site of one element changed at once (three O read as F) and the
            elements of two sites swapped, in every pass.
        z_neighbours: also try, at every site, the ``z_neighbours`` elements on either side of its current
            element in Z, however the segmenter ranks them: decoding confuses neighbours in Z (Re read as W),
            and the segmenter often ranks the right one far down.
        add_margin: relative cut of the distance a site added must bring (0: any).
        position_steps, position_lr_A, position_rounds: after the search, the positions alone are fitted
            through the encoder (``icsg.generation.soft_fit.position_fit``: Adam, ``position_lr_A`` Å per
            step), the candidates recomputed at the new positions and the search run again; repeated
            ``position_rounds`` times (0 steps = off). Why: from positions 0.1-0.5 Å off, the true elements are
            often farther from z than wrong ones.
        restart_above: a crystal whose code distance after all the above is still above this (mean squared
            latent distance) is read a second time from the segmentation's own reading: positions fitted first,
            then the search and the position rounds, without the soft fit; the nearer of the two readings is
            kept, so the distance never rises (None = off; ``icsg.generation.pipeline.restarted``). Why: the soft
            fit sometimes walks away from a segmentation that was right.
        exact_fit_steps, exact_fit_cell_lr, exact_below: at the end, positions and cell lengths fitted together
            through the encoder; a crystal then closer than ``exact_below`` to its code reproduces it and keeps
            the fitted cell, any other keeps the cell it was read with (0 steps = off). Why: the cell read from
            the code is ~0.01 Å off, which alone leaves a code distance of up to 1e-3 on the true crystal.
        element_refit_above, element_refit_steps, element_refit_top, element_refit_fits, element_refit_width,
        element_refit_rounds, site_refit: crystals still at least ``element_refit_above`` from their code after
            the exact fit are tried with one site's element changed (``element_refit_width`` neighbours in Z on
            either side and the ``element_refit_top`` likeliest classes), and with ``site_refit`` also with one
            site removed or two close sites merged into one (a broad peak read as two sites); the
            ``element_refit_fits`` candidates nearest the code at fixed geometry are fitted for
            ``element_refit_steps`` steps and the nearest kept where nearer, for up to
            ``element_refit_rounds`` rounds (None = off). Why: the remaining misses mostly differ from the truth
            by one element two or three steps away in Z (N read as F past O, Ti as Mn).
    """

    top_k: int = 8
    spare_k: int = 2
    rounds: int = 3
    species_passes: int = 4
    cell_span: float = 0.0
    cell_steps: int = 13
    axis_span: float = 0.0
    axis_steps: int = 5
    batch_size: int = 64
    soft_steps: int = 60
    soft_top_k: int = 16
    group_moves: bool = True
    z_neighbours: int = 2
    add_margin: float = 0.0
    position_steps: int = 100
    position_lr_A: float = 0.01
    position_rounds: int = 1
    restart_above: float | None = 5e-4
    exact_fit_steps: int = 100
    exact_fit_cell_lr: float = 1e-3
    exact_below: float = 1e-6
    element_refit_above: float | None = 1e-6
    element_refit_steps: int = 50
    element_refit_top: int = 2
    element_refit_fits: int = 6
    element_refit_width: int = 3
    element_refit_rounds: int = 5
    site_refit: bool = True
    site_merge_within_A: float = 1.6

    def __post_init__(self) -> None:
        if self.element_refit_above is not None and not self.element_refit_above >= 0:
            raise ValueError("element_refit_above is a code distance and must be >= 0 (None turns it off)")
        if (self.element_refit_steps < 1 or self.element_refit_top < 0 or self.element_refit_fits < 1
                or self.element_refit_width < 0 or self.element_refit_rounds < 1
                or not self.site_merge_within_A >= 0):
            raise ValueError("ConsistencyConfig needs element_refit_steps >= 1, element_refit_top >= 0, "
                             "element_refit_fits >= 1, element_refit_width >= 0, element_refit_rounds >= 1 "
                             "and site_merge_within_A >= 0")
        if self.exact_fit_steps < 0 or self.exact_fit_cell_lr < 0 or not self.exact_below > 0:
            raise ValueError("ConsistencyConfig needs exact_fit_steps >= 0, exact_fit_cell_lr >= 0 and exact_below > 0")
        if self.position_steps < 0 or self.position_rounds < 0 or self.position_lr_A <= 0:
            raise ValueError("ConsistencyConfig needs position_steps >= 0, position_rounds >= 0, position_lr_A > 0")
        if self.top_k < 1 or self.rounds < 1 or self.species_passes < 0 or self.z_neighbours < 0:
            raise ValueError("ConsistencyConfig needs top_k >= 1, rounds >= 1, species_passes >= 0, z_neighbours >= 0")
        if self.restart_above is not None and not self.restart_above >= 0:
            raise ValueError("restart_above is a code distance and must be >= 0 (None turns the restart off)")
        if not 0 <= self.add_margin < 1:
            raise ValueError("add_margin is a relative cut of the distance and must lie in [0, 1)")
        if not (0 <= self.cell_span < 0.5 and 0 <= self.axis_span < 0.5):
            raise ValueError("cell_span and axis_span are relative and must lie in [0, 0.5)")
        if self.cell_steps < 3 or self.axis_steps < 3:
            raise ValueError("cell_steps and axis_steps must be >= 3 (a parabola needs three points)")
