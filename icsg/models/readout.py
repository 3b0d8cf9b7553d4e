"""Readout encoder: the part of the code that carries what a density map leaves ambiguous.

A decoded density map places the atoms well but tells neighbouring elements apart badly: their
eq.-1 Gaussians differ by a few per cent in height and width, about what the decoder gets wrong, and
the shipped VAE's code does not hold the composition in a readable form (a 2 × 1024 MLP on 10,805
training codes reads the exact composition of 59 % of held-out ones). So the code of a crystal has two
parts,

    z = [z_map, z_read]

z_map (the Cond-DFC-VAE's latent, ``icsg.models.vae``) is decoded into the map that gives the site
positions; z_read (this model, ``latent_dim`` numbers) is read by small heads into

    composition  element counts, logits over 0..max_count per element of ``elements_Z``       (B, E, K)
    cell         lengths (a, b, c) in Å, then for any lattice the angles (α, β, γ) in °  (B, 3 or 6)
    property     the conditioning property (e.g. heat_ref, eV) when the data has it       (B, 1)
    positions    for a site of element Z the map places near fractional x, where the code puts it:
                 x + Δ(z_read, Z, x)                                                     (B, S, 3)
    slots        the fractional position of the k-th site of element Z, from the code alone (B, S, 3)

The decoded map places sites ~0.1 Å off (the decoder's blur), the code knows them exactly: the position
head snaps the map's sites onto the code's, the amortised form of fitting positions through the encoder.
It is trained on the true sites displaced by Gaussian noise of ``position_noise`` (fractional units), so it
corrects displacements up to a few times that. Where the decoder misplaces a site by more (distorted
cells, whose maps blur the displaced sites into their neighbours), the slot head answers instead: it
places the sites of each element from z_read alone, the k-th site of an element being the k-th in the
canonical order of ``canonical_order`` (so that 'the k-th N' names one site of the crystal). For any lattice the
code also holds the site list itself by a linear path (``site_features``), which the slot head reads back.

The encoder sees the crystal as a set of sites, as CDVAE's encoder does (it reads atom types and
positions, not densities): an embedding of each site's Z beside periodic features of its fractional
coordinates (sin, cos of 2πk·x, k = 1..``harmonics``), summed over the sites (Deep Sets, so counts add
up and the site order does not matter), beside the standardised cell lengths -> Dense -> (μ, log σ²). It is
variational, q(z_read | crystal) = N(μ, σ²) with a KL term of weight ``beta``, and the heads are trained
on samples of q, so they read any code near a training code, not only the means: that is what lets a
prior over z (random generation) land on crystals the heads can read. A 3-D CNN over [M, C] in its
place learnt the composition far more slowly (no crystal right after 600 steps, 4 min per epoch here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import layers, ops

from icsg.models.slots import build_slot_head, chamfer_slot_loss
from icsg.representation.sites import canonical_order


@dataclass(frozen=True)
class ReadoutConfig:
    """Args:
        elements_Z: elements the composition head counts, in order.
        max_count: largest count of one element in a cell the head can answer.
        max_sites: sites per crystal the encoder takes (0-padded).
        embed_dim: size of the learnt per-element embedding.
        latent_dim: size of z_read.
        hidden: width of the encoder's and the heads' dense layers.
        beta: weight of KL(q(z_read | crystal) || N(0, I)) (mean over dimensions and batch).
        cell_weight, property_weight: loss weights of the standardised cell (Å) and property MSEs.
        position_weight: loss weight of the position head's squared error (Å²).
        position_noise: std of the displacement (fractional units) the position head learns to undo.
        slot_weight: loss weight of the slot head's squared error (Å²).
        harmonics: periodic features per coordinate.
        abc_mean_A, abc_std_A, property_mean, property_std: standardisation of the cell and property,
            from the training split.
        angles: the cell is six numbers, lengths (Å) then angles (°), for crystals of any lattice (periodic
            datasets); False: three lengths of a cubic-family cell.
        angle_mean_deg, angle_std_deg: standardisation of the angles, from the training split.
        count_features: the encoder also sees the crystal's element counts (sites per element of ``elements_Z``)
            beside the pooled site features, so the composition reaches the code by a linear path: with many
            elements (86 in Materials Project sets) the pooled features alone carried no exact composition
            after 300 steps.
        ordinal_counts: each element's count logits are a discretised Gaussian, -(k - μ_e)² / 2σ_e² - log σ_e over
            k = 0..max_count, μ_e read linearly from the head's features plus a linear path from z_read (started as
            the transpose of the encoder's count path, so counts are read back exactly at first), log σ_e from
            the features, instead of a free softmax
            per element: a count is then a regression that every crystal informs, and the rare elements (86 in
            Materials Project sets) are read after a few epochs instead of staying at the marginal counts.
        slot_matching: the slot loss pairs each slot with the nearest site of its element and each site with the
            nearest slot (a symmetric Chamfer distance, Å²) instead of 'the k-th site of Z' in ``canonical_order``:
            in general cells that order jumps whenever a site crosses a 1/8 grid plane, and the slot head learnt
            nothing better than chance (2.2 Å RMS in cells of ~5.4 Å) against it.
        site_features: the encoder also sees the site list itself, (cos 2πx, sin 2πx) per axis of each site in
            ``canonical_order``, by a linear path into μ, and the slot head reads each slot back through the
            transposed path (started so, beside the count path, on orthonormal rows: ``latent_dim`` must be at least
            n_elements + 6·max_sites), with its dense layers learning what the path misses: the per-slot dense
            head alone, reading positions out of pooled site features, placed held-out sites 1.3 Å (median) off.
    """

    elements_Z: tuple = ()
    max_count: int = 8
    max_sites: int = 40
    embed_dim: int = 32
    latent_dim: int = 32
    hidden: int = 256
    beta: float = 1e-3
    cell_weight: float = 30.0
    property_weight: float = 0.1
    position_weight: float = 100.0
    position_noise: float = 0.04
    slot_weight: float = 100.0
    harmonics: int = 2
    abc_mean_A: float = 4.0
    abc_std_A: float = 0.3
    property_mean: float = 0.0
    property_std: float = 1.0
    angles: bool = False
    angle_mean_deg: float = 90.0
    angle_std_deg: float = 1.0
    count_features: bool = False
    slot_matching: bool = False
    ordinal_counts: bool = False
    site_features: bool = False

    @property
    def cell_dims(self) -> int:
        return 6 if self.angles else 3

    def standardise_cell(self, cell):
        """(..., cell_dims) lengths Å [, angles °] -> standardised (any backend tensor or array)."""
        if not self.angles:
            return (cell - self.abc_mean_A) / self.abc_std_A
        return ops.concatenate([(cell[..., :3] - self.abc_mean_A) / self.abc_std_A,
                                (cell[..., 3:] - self.angle_mean_deg) / self.angle_std_deg], axis=-1)

    @property
    def n_elements(self) -> int:
        return len(self.elements_Z)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["elements_Z"] = [int(z) for z in self.elements_Z]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ReadoutConfig":
        d = {k: v for k, v in dict(d).items() if k in cls.__dataclass_fields__}
        d["elements_Z"] = tuple(int(z) for z in d.get("elements_Z", ()))
        return cls(**d)


def _periodic(frac, harmonics: int):
    """(..., 3) fractional coordinates -> (..., 6·harmonics) sin and cos of 2πk·x."""
    parts = []
    for k in range(1, harmonics + 1):
        parts += [ops.sin(2 * 3.141592653589793 * k * frac), ops.cos(2 * 3.141592653589793 * k * frac)]
    return ops.concatenate(parts, axis=-1)


def build_readout_encoder(cfg: ReadoutConfig) -> keras.Model:
    """(site Z (B, S) int, 0 = no site; fractional coordinates (B, S, 3); cell (B, cell_dims): lengths Å
    [, angles °]) -> (μ, log σ²), each (B, latent_dim)."""
    z_in = keras.Input((cfg.max_sites,), dtype="int32", name="site_Z")
    f_in = keras.Input((cfg.max_sites, 3), name="site_frac")
    abc_in = keras.Input((cfg.cell_dims,), name="abc_A")
    e = layers.Embedding(119, cfg.embed_dim, name="r_embed")(z_in)
    per = layers.Lambda(lambda t: _periodic(t, cfg.harmonics), name="r_periodic")(f_in)
    e = layers.Concatenate(name="r_site_in")([e, per])
    e = layers.Dense(cfg.hidden, activation="relu", name="r_site")(e)
    e = layers.Dense(cfg.hidden, activation="relu", name="r_site2")(e)
    mask = layers.Lambda(lambda t: ops.expand_dims(ops.cast(ops.greater(t, 0), "float32"), -1), name="r_mask")(z_in)
    pooled = layers.Lambda(lambda t: ops.sum(t[0] * t[1], axis=1), name="r_sum")([e, mask])
    abc = layers.Lambda(cfg.standardise_cell, name="r_abc")(abc_in)
    parts = [pooled, abc]
    if cfg.count_features:
        table = ops.convert_to_tensor([cfg.elements_Z.index(z) + 1 if z in cfg.elements_Z else 0 for z in range(119)],
                                      "int32")
        counts = layers.Lambda(lambda t: ops.sum(ops.one_hot(ops.take(table, t), cfg.n_elements + 1), 1)[:, 1:],
                               output_shape=(cfg.n_elements,), name="r_counts")(z_in)
        parts.append(counts)
    x = layers.Concatenate(name="r_sites_cell")(parts)
    x = layers.Dense(cfg.hidden, activation="relu", name="r_dense")(x)
    mu = layers.Dense(cfg.latent_dim, name="r_mu")(x)
    if cfg.count_features:  # and a linear path from the counts into the code
        linear = layers.Dense(cfg.latent_dim, use_bias=False, name="r_counts_mu")(counts)
        mu = layers.Add(name="r_mu_counts")([mu, linear])
    if cfg.site_features:  # and one from the site list, (cos, sin) per axis, 0 for the padding
        cs = layers.Lambda(lambda t: ops.reshape(site_cos_sin(t[0]) * t[1],
                                                 (-1, cfg.max_sites * 6)), name="r_site_cos_sin")([f_in, mask])
        mu = layers.Add(name="r_mu_sites")([mu, layers.Dense(cfg.latent_dim, use_bias=False, name="r_sites_mu")(cs)])
    # σ starts small (e^-3): with σ ≈ 1 the samples hide μ and the composition heads sit on the marginal counts
    # for hundreds of steps before any code is read.
    logvar = layers.Dense(cfg.latent_dim, bias_initializer=keras.initializers.Constant(-6.0), name="r_logvar")(x)
    return keras.Model([z_in, f_in, abc_in], [mu, logvar], name="readout_encoder")


def site_cos_sin(frac):
    """(..., 3) fractional coordinates -> (..., 6): cos 2πx, sin 2πx, cos 2πy, ... (the slot head's output order)."""
    ang = 2 * 3.141592653589793 * frac
    return ops.reshape(ops.stack([ops.cos(ang), ops.sin(ang)], -1), (*ops.shape(frac)[:-1], 6))


def _discrete_gaussian(mean, log_sd, n_counts: int):
    """(B, E) μ and log σ -> (B, E, K) logits -(k - μ)² / 2σ² - log σ (``ReadoutConfig.ordinal_counts``)."""
    log_sd = ops.clip(log_sd, -4.0, 3.0)
    k = ops.cast(ops.arange(n_counts), mean.dtype)
    d = (k - ops.expand_dims(mean, -1)) / ops.expand_dims(ops.exp(log_sd), -1)
    return -0.5 * ops.square(d) - ops.expand_dims(log_sd, -1)


def build_readout_heads(cfg: ReadoutConfig) -> keras.Model:
    """z_read (B, latent_dim) -> {'composition': logits (B, E, K), 'cell': standardised (B, cell_dims),
    'property': standardised (B, 1)}."""
    z_in = keras.Input((cfg.latent_dim,), name="z_read")
    h = layers.Dense(cfg.hidden, activation="relu", name="h_dense0")(z_in)
    h = layers.Dense(cfg.hidden, activation="relu", name="h_dense1")(h)
    k = cfg.max_count + 1
    if cfg.ordinal_counts:
        mean = layers.Add(name="h_count_mean_sum")([layers.Dense(cfg.n_elements, kernel_initializer="zeros",
                                                                 name="h_count_mean")(h),
                                                    layers.Dense(cfg.n_elements, name="h_count_linear")(z_in)])
        log_sd = layers.Dense(cfg.n_elements, bias_initializer="zeros", name="h_count_log_sd")(h)
        comp = layers.Lambda(lambda t: _discrete_gaussian(t[0], t[1], k), output_shape=(cfg.n_elements, k),
                             name="composition")([mean, log_sd])
    else:
        comp = layers.Reshape((cfg.n_elements, k), name="composition")(
            layers.Dense(cfg.n_elements * k, name="h_composition")(h))
    cell = layers.Dense(cfg.cell_dims, name="cell")(h)
    prop = layers.Dense(1, name="property")(h)
    return keras.Model(z_in, {"composition": comp, "cell": cell, "property": prop}, name="readout_heads")


def build_position_head(cfg: ReadoutConfig) -> keras.Model:
    """(z_read (B, D), site Z (B, S), approximate fractional positions (B, S, 3)) -> corrections Δ (B, S, 3)."""
    z_in = keras.Input((cfg.latent_dim,), name="z_read")
    s_in = keras.Input((cfg.max_sites,), dtype="int32", name="site_Z")
    q_in = keras.Input((cfg.max_sites, 3), name="query_frac")
    zt = layers.Lambda(lambda t: ops.repeat(ops.expand_dims(t, 1), cfg.max_sites, axis=1), name="p_tile")(z_in)
    e = layers.Embedding(119, cfg.embed_dim, name="p_embed")(s_in)
    per = layers.Lambda(lambda t: _periodic(t, cfg.harmonics), name="p_periodic")(q_in)
    h = layers.Concatenate(name="p_in")([zt, e, per])
    h = layers.Dense(cfg.hidden, activation="relu", name="p_dense0")(h)
    h = layers.Dense(cfg.hidden, activation="relu", name="p_dense1")(h)
    out = layers.Dense(3, name="p_delta", kernel_initializer="zeros")(h)
    return keras.Model([z_in, s_in, q_in], out, name="position_head")


@keras.saving.register_keras_serializable(package="icsg")
class Readout(keras.Model):
    """Encoder + heads. x = (site Z (B, S), fractional coordinates (B, S, 3), cell (B, cell_dims)); the loss
    (``compute_loss``) needs
    y = {'counts' (B, E) int, 'abc_A' (B, 3) Å, 'property' (B,) with NaN where unknown, and for any lattice
    'angles_deg' (B, 3)}. Position errors are weighed in Å along the cell axes (exact for orthogonal cells)."""

    def __init__(self, cfg: dict, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.cfg = ReadoutConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
        self.encoder = build_readout_encoder(self.cfg)
        self.heads = build_readout_heads(self.cfg)
        self.positions = build_position_head(self.cfg)
        self.slots = build_slot_head(self.cfg)
        self.seed_gen = keras.random.SeedGenerator(seed)
        names = ("composition_ce", "composition_acc", "cell_mae_A", "property_mae", "position_rmse_A", "slot_rmse_A",
                 "kl") + (("angle_mae_deg",) if self.cfg.angles else ())
        self.trackers = {k: keras.metrics.Mean(name=k) for k in names}

    def build(self, input_shape=None):
        self.built = True

    def call(self, x, training=False):
        site_Z, frac, _ = x
        mu, logvar = self.encoder(x, training=training)
        z = mu
        if training:
            z = mu + keras.random.normal(ops.shape(mu), seed=self.seed_gen) * ops.exp(0.5 * logvar)
        query = frac + self.cfg.position_noise * keras.random.normal(ops.shape(frac), seed=self.seed_gen)
        delta = self.positions([z, site_Z, query], training=training)
        return {**self.heads(z, training=training), "mu": mu, "logvar": logvar, "query": query, "delta": delta,
                "slots": self.slots([z, site_Z], training=training), "site_Z": site_Z, "frac": frac}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        c = self.cfg
        counts = ops.cast(ops.clip(y["counts"], 0, c.max_count), "int32")
        logits = y_pred["composition"]
        ce = ops.sum(ops.mean(keras.losses.sparse_categorical_crossentropy(counts, logits, from_logits=True), 0))
        right = ops.all(ops.equal(ops.cast(ops.argmax(logits, -1), "int32"), counts), axis=-1)
        cell = ops.cast(y["abc_A"], logits.dtype)
        if c.angles:
            cell = ops.concatenate([cell, ops.cast(y["angles_deg"], logits.dtype)], axis=-1)
        abc = c.standardise_cell(cell)
        cell_mse = ops.mean(ops.square(y_pred["cell"] - abc))
        prop = ops.cast(y["property"], logits.dtype)
        known = ops.cast(ops.logical_not(ops.isnan(prop)), logits.dtype)
        prop_z = ops.where(ops.isnan(prop), 0.0, (prop - c.property_mean) / c.property_std)
        prop_mse = ops.sum(known * ops.square(y_pred["property"][:, 0] - prop_z)) / ops.maximum(ops.sum(known), 1.0)
        mu, logvar = y_pred["mu"], y_pred["logvar"]
        kl = ops.mean(-0.5 * (1 + logvar - ops.square(mu) - ops.exp(logvar)))
        miss = y_pred["query"] + y_pred["delta"] - y_pred["frac"]
        miss = (miss - ops.round(miss)) * ops.expand_dims(ops.cast(y["abc_A"], logits.dtype), 1)
        occupied = ops.cast(ops.greater(y_pred["site_Z"], 0), logits.dtype)
        pos_mse = ops.sum(ops.sum(ops.square(miss), -1) * occupied) / ops.maximum(ops.sum(occupied), 1.0)
        if c.slot_matching:
            slot_mse = chamfer_slot_loss(y_pred["slots"], y_pred["frac"], y_pred["site_Z"],
                                         ops.cast(y["abc_A"], logits.dtype))
        else:
            off = y_pred["slots"] - y_pred["frac"]
            off = (off - ops.round(off)) * ops.expand_dims(ops.cast(y["abc_A"], logits.dtype), 1)
            slot_mse = ops.sum(ops.sum(ops.square(off), -1) * occupied) / ops.maximum(ops.sum(occupied), 1.0)
        self.trackers["composition_ce"].update_state(ce)
        self.trackers["composition_acc"].update_state(ops.mean(ops.cast(right, logits.dtype)))
        self.trackers["cell_mae_A"].update_state(ops.mean(ops.abs(y_pred["cell"][:, :3] - abc[:, :3])) * c.abc_std_A)
        if c.angles:
            self.trackers["angle_mae_deg"].update_state(
                ops.mean(ops.abs(y_pred["cell"][:, 3:] - abc[:, 3:])) * c.angle_std_deg)
        self.trackers["property_mae"].update_state(
            ops.sum(known * ops.abs(y_pred["property"][:, 0] - prop_z)) / ops.maximum(ops.sum(known), 1.0) * c.property_std)
        self.trackers["kl"].update_state(kl)
        self.trackers["position_rmse_A"].update_state(ops.sqrt(pos_mse))
        self.trackers["slot_rmse_A"].update_state(ops.sqrt(slot_mse))
        return (ce + c.cell_weight * cell_mse + c.property_weight * prop_mse + c.position_weight * pos_mse
                + c.slot_weight * slot_mse + c.beta * kl)

    @property
    def metrics(self):
        return super().metrics + list(self.trackers.values())

    def get_config(self):
        return {**super().get_config(), "cfg": self.cfg.to_dict()}


def build_readout(cfg: ReadoutConfig) -> Readout:
    model = Readout(cfg.to_dict(), name="readout")
    model([ops.zeros((1, cfg.max_sites), dtype="int32"), ops.zeros((1, cfg.max_sites, 3)),
           ops.ones((1, cfg.cell_dims))])
    # start with the counts (and the sites) read back through the code exactly: orthonormal rows, transposed reads
    n_counts = cfg.n_elements if cfg.count_features and cfg.ordinal_counts else 0
    n_sites = 6 * cfg.max_sites if cfg.site_features else 0
    if n_counts + n_sites > cfg.latent_dim and n_sites:
        raise ValueError(f"site_features needs latent_dim >= {n_counts + n_sites} (the count and site paths), "
                         f"got {cfg.latent_dim}")
    if n_sites:  # the dense path into μ starts at 0, so the site list is read back exactly at first
        model.encoder.get_layer("r_mu").kernel.assign(ops.zeros((cfg.hidden, cfg.latent_dim)))
    if n_counts + n_sites:
        rows = keras.initializers.Orthogonal(seed=0)((n_counts + n_sites, cfg.latent_dim))
        if n_counts:
            model.encoder.get_layer("r_counts_mu").kernel.assign(rows[:n_counts])
            model.heads.get_layer("h_count_linear").kernel.assign(ops.transpose(rows[:n_counts]))
        if n_sites:
            model.encoder.get_layer("r_sites_mu").kernel.assign(rows[n_counts:])
            model.slots.get_layer("s_linear").kernel.assign(ops.transpose(rows[n_counts:]))
    return model


def site_arrays(structures, max_sites: int):
    """(Z (B, max_sites) int32, fractional coordinates (B, max_sites, 3) in [0, 1)) of each crystal's sites in
    ``canonical_order``, 0-padded; ValueError naming a crystal with more sites."""
    import numpy as np

    zs = np.zeros((len(structures), max_sites), dtype=np.int32)
    fr = np.zeros((len(structures), max_sites, 3), dtype=np.float32)
    for i, s in enumerate(structures):
        if len(s) > max_sites:
            raise ValueError(f"{s.composition.reduced_formula}: {len(s)} sites, the readout takes at most {max_sites}")
        order = canonical_order([site.specie.Z for site in s], s.frac_coords)
        zs[i, :len(s)] = [s[j].specie.Z for j in order]
        fr[i, :len(s)] = np.mod(s.frac_coords[order], 1.0)
    return zs, fr


def read_heads(heads_out: dict, cfg: ReadoutConfig):
    """Head outputs -> numpy (counts (B, E) int, count log-probabilities (B, E, K), cell (B, cell_dims): lengths Å
    [, angles °], property (B,) in its own units)."""
    import numpy as np

    logits = np.asarray(keras.ops.convert_to_numpy(heads_out["composition"]), dtype=np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    cell = np.asarray(keras.ops.convert_to_numpy(heads_out["cell"]), np.float64)
    cell[:, :3] = cell[:, :3] * cfg.abc_std_A + cfg.abc_mean_A
    cell[:, 3:] = cell[:, 3:] * cfg.angle_std_deg + cfg.angle_mean_deg
    prop = np.asarray(keras.ops.convert_to_numpy(heads_out["property"]), np.float64)[:, 0]
    return logp.argmax(-1), logp, cell, prop * cfg.property_std + cfg.property_mean
