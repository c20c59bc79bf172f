"""The plugin's own tests: ravedata's testing kit checks the contract, then what bitcrush does."""
import numpy as np

from rave_data.testing import check_augmenter
from ravedata_bitcrush import Bitcrush


def test_bitcrush_follows_the_augmenter_contract():
    # shapes, dtype, channels, lengths, finite output, same rng -> same output,
    # declared ranges respected, record/replay round trip
    check_augmenter(Bitcrush, length_preserving=True)
    check_augmenter(Bitcrush, settings={"bits": [2, 4]}, length_preserving=True)


def test_fewer_bits_leave_fewer_levels():
    x = np.linspace(-1, 1, 1000, dtype=np.float32)[None, :]
    y = Bitcrush().apply(x, 44100, bits=3)
    assert len(np.unique(y)) <= 2**3 + 1
