"""Exact length of an mp3 that has no Xing/Info/VBRI tag, from its frame headers.

libsndfile (mpg123) knows an mp3's exact length only from such a tag, which
mainstream encoders write; without one it estimates from the file size. Each
MPEG audio frame starts with a 4-byte header giving its size and sample
count, so walking the headers (payloads skipped, the file memory-mapped) is
exact and still reads a tiny part of the file.
"""
from __future__ import annotations

import mmap
from pathlib import Path

# Bitrates (kbit/s) indexed by [mpeg1?][layer][index]; layer 1..3.
_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
# Sample rates by version bits (0 = MPEG 2.5, 2 = MPEG 2, 3 = MPEG 1).
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame(buf: mmap.mmap | bytes, pos: int) -> tuple[int, int] | None:
    """(frame length in bytes, samples per channel) of the MPEG audio frame
    header at ``pos``, or None when there is no valid header there."""
    if pos + 4 > len(buf):
        return None
    b1, b2 = buf[pos + 1], buf[pos + 2]
    if buf[pos] != 0xFF or (b1 & 0xE0) != 0xE0:
        return None
    version = (b1 >> 3) & 3
    layer = 4 - ((b1 >> 1) & 3)  # bits 11,10,01 -> layer 1,2,3
    br_index, sr_index = b2 >> 4, (b2 >> 2) & 3
    if version == 1 or layer == 4 or br_index in (0, 15) or sr_index == 3:
        return None  # reserved values, or free-format bitrate we cannot size
    mpeg1 = version == 3
    bitrate = _BITRATES[(mpeg1, layer)][br_index] * 1000
    sr = _RATES[version][sr_index]
    padding = (b2 >> 1) & 1  # one extra slot (4 bytes in layer 1)
    if layer == 1:
        return (12 * bitrate // sr + padding) * 4, 384
    if layer == 3 and not mpeg1:
        return 72 * bitrate // sr + padding, 576
    return 144 * bitrate // sr + padding, 1152


def _id3v2_size(buf: mmap.mmap | bytes) -> int:
    if len(buf) < 10 or buf[:3] != b"ID3":
        return 0
    size = 0
    for b in buf[6:10]:  # "syncsafe" integer: 7 bits per byte
        size = (size << 7) | (b & 0x7F)
    footer = 10 if buf[5] & 0x10 else 0
    return 10 + size + footer


def mp3_exact_frames(path: Path | str) -> int | None:
    """Samples per channel of an mp3 that has no Xing/Info/VBRI tag, counted
    from its frame headers; None when the file has such a tag (libsndfile's
    count is then exact, gapless padding removed) or cannot be parsed.

    Decoders (libsndfile/mpg123, ffmpeg) output every frame of an untagged
    file, so frames x samples-per-frame is what decoding yields.
    """
    with open(path, "rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            return None
        with buf:
            pos = _id3v2_size(buf)
            first = _mp3_frame(buf, pos)
            if first is None:
                return None
            # The Xing/Info tag sits in the first frame's side-info area; VBRI
            # at a fixed offset of 32 bytes after the header.
            head = buf[pos : pos + first[0]]
            if b"Xing" in head or b"Info" in head or b"VBRI" in head:
                return None
            total = 0
            while (frame := _mp3_frame(buf, pos)) is not None:
                length, samples = frame
                if pos + length > len(buf):
                    break  # truncated last frame: decoders drop it
                total += samples
                pos += length
            return total
