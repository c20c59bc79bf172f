"""A ravedata plugin in one module: reduce the bit depth (audible quantisation grit)."""
import numpy as np

from rave_data import hookimpl
from rave_data.augment import Augmenter, Param


class Bitcrush(Augmenter):
    """Quantise samples to fewer bits."""

    name = "bitcrush"
    params = (Param("bits", (6, 12), kind=int, lo=2, hi=24, doc="bits kept per sample"),)

    def apply(self, audio, sr, bits=8):
        step = 2.0 ** (1 - bits)  # full scale [-1, 1] split into 2**bits levels
        return (np.round(audio / step) * step).astype(np.float32)


@hookimpl
def register_augmenters(register):
    register(Bitcrush)
