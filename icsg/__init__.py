"""icsg: 3-D inorganic crystal structure generation and property prediction."""
import os as _os

_os.environ.setdefault("KERAS_BACKEND", "torch")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
