"""icsg: 3-D inorganic crystal structure generation and property prediction.

Public API (imported lazily so ``import icsg`` stays fast and keras is imported only
when a model is needed):

    encode, decode_structure, GridSpec          the voxel representation (no learning)
    encode_imatgen, decode_imatgen              the iMatGen image representation
    load_pretrained, Generator                  the shipped Cond-DFC-VAE + UNet
    ImatgenGenerator, CCDCGANGenerator,         the literature baselines (iMatGen-style VAE,
    make_generator                              CCDCGAN-style GAN) behind the same interface
    predict_properties, PROPERTIES              the CGCNN property models
"""
import os as _os

_os.environ.setdefault("KERAS_BACKEND", "torch")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_LAZY = {
    "GridSpec": ("icsg.grid", "GridSpec"),
    "encode": ("icsg.representation.density", "encode"),
    "decode_structure": ("icsg.segmentation.watershed", "decode_structure"),
    "encode_imatgen": ("icsg.representation.imatgen", "encode_imatgen"),
    "decode_imatgen": ("icsg.representation.imatgen", "decode_imatgen"),
    "load_pretrained": ("icsg.pretrained", "load_pretrained"),
    "Generator": ("icsg.generation.generator", "Generator"),
    "ImatgenGenerator": ("icsg.generation.baselines", "ImatgenGenerator"),
    "CCDCGANGenerator": ("icsg.generation.baselines", "CCDCGANGenerator"),
    "make_generator": ("icsg.generation.baselines", "make_generator"),
    "predict_properties": ("icsg.predict", "predict_properties"),
    "PROPERTIES": ("icsg.properties", "PROPERTIES"),
    "CrystalError": ("icsg.errors", "CrystalError"),
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'icsg' has no attribute {name!r}")
