"""ravedata-roomverb's own tests: the testing kit checks the contract of `room`."""
from rave_data.testing import check_augmenter
from ravedata_roomverb.plugin import Room


def test_room_follows_the_augmenter_contract():
    # Short inputs: each apply synthesises a room response up to rt60 long.
    check_augmenter(Room, length_preserving=True, lengths=(16, 4410), draws=2)


def test_a_long_room_still_keeps_the_contract():
    check_augmenter(Room, settings={"rt60": 1.5, "drr_db": -10.0}, length_preserving=True,
                    lengths=(1000,), channels=(2,), draws=1)
