"""The soft fit (icsg.generation.soft_fit) with a stand-in Keras encoder, a fixed random projection of
[M, C]: gradients reach elements, occupancies, positions and cell through the encoder."""

import numpy as np

from icsg.generation.consistency import Sites
from icsg.generation.soft_fit import render_soft, soft_fit
from icsg.grid import GridSpec
from icsg.representation.density import encode, sites_density, vae_input

SPEC = GridSpec(size=16)
CLASSES = np.array([0, 8, 9, 22, 38, 40, 56])  # background, O, F, Ti, Sr, Zr, Ba


class _VAE:
    def __init__(self, dim: int = 64, seed: int = 0):
        import keras

        x = keras.Input((16, 16, 16, 4))
        c = keras.Input((10,))
        w = np.random.default_rng(seed).normal(size=(16**3 * 4, dim)) / np.sqrt(dim)
        dense = keras.layers.Dense(dim, use_bias=False, trainable=False)
        mu = dense(keras.layers.Flatten()(x))
        self.encoder = keras.Model([x, c], [mu, mu])
        dense.set_weights([w.astype(np.float32)])


def _perovskite(a=3.9, a_site="Sr", b_site="Ti"):
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(a), [a_site, b_site, "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def test_render_soft_of_one_hot_sites_is_eq1():
    from keras import ops

    s = _perovskite(3.95)
    abc = np.array(s.lattice.abc)
    z = np.array([site.specie.Z for site in s])
    vox = SPEC.cartesian_to_index(s.cart_coords, abc)
    from icsg.representation.density import _NORM, _radius_of_Z

    r = np.array([_radius_of_Z(int(k)) for k in z])[None, :, None]
    x = render_soft(ops.convert_to_tensor(s.cart_coords[None].astype(np.float32)), ops.ones((1, 5, 1)),
                    ops.ones((1, 5)), ops.convert_to_tensor(abc[None].astype(np.float32)),
                    ops.convert_to_tensor((_NORM * z[None, :, None] / r**3).astype(np.float32)),
                    ops.convert_to_tensor(r.astype(np.float32)), SPEC)
    want = vae_input(sites_density(z, vox, abc, SPEC)[None], abc[None], SPEC)
    np.testing.assert_allclose(ops.convert_to_numpy(x), want, atol=2e-5)


def test_soft_fit_recovers_elements_cell_and_a_missing_site():
    vae = _VAE()
    truth = _perovskite(3.9)
    e = encode(truth, SPEC)
    target = np.asarray(vae.encoder.predict([vae_input(e.density[None], e.abc_A[None], SPEC),
                                             np.zeros((1, 10), np.float32)], verbose=0)[0])
    abc = np.array(truth.lattice.abc)
    vox = SPEC.cartesian_to_index(truth.cart_coords, abc)
    # the segmenter's class probabilities: two candidates per site, the wrong one first at the A site
    lp = np.full((5, len(CLASSES)), np.log(0.01))
    for k, (first, second) in enumerate([(56, 38), (22, 40), (9, 8), (8, 9), (8, 9)]):
        lp[k, list(CLASSES).index(first)], lp[k, list(CLASSES).index(second)] = np.log(0.5), np.log(0.4)
    # read: Ba for Sr, F for an O, the last O missing (a spare position), the cell 2 % long
    start = Sites(abc * 1.02, np.array([56, 22, 9, 8]), vox[:4], lp[:4], vox[4:5], lp[4:5])
    out = soft_fit(vae, [None, start], np.vstack([target, target]), np.zeros((2, 10)), CLASSES, SPEC, steps=150,
                   position_lr_A=0.01, cell_lr=0.002)
    assert out[0] is None and out[1] is not start
    got = out[1]
    assert sorted(got.z.tolist()) == [8, 8, 8, 22, 38]
    assert np.abs(got.abc_A - 3.9).max() < 0.03
    # by default the cell stays as read (it comes from the code's readout)
    kept = soft_fit(vae, [start], target, np.zeros((1, 10)), CLASSES, SPEC, steps=4)[0]
    assert np.allclose(kept.abc_A, start.abc_A)


def test_soft_fit_leaves_crystals_without_class_probabilities():
    s = Sites(np.full(3, 4.0), np.array([8]), np.zeros((1, 3)))
    assert soft_fit(_VAE(), [s], np.zeros((1, 64)), np.zeros((1, 10)), CLASSES, SPEC)[0] is s


def test_soft_fit_on_tensorflow():
    import os
    import subprocess
    import sys

    import pytest

    pytest.importorskip("tensorflow", reason="tensorflow not installed (pip install 'icsg[tensorflow]')")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"{__file__}::test_render_soft_of_one_hot_sites_is_eq1",
                        f"{__file__}::test_soft_fit_recovers_elements_cell_and_a_missing_site"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "2 passed" in r.stdout
