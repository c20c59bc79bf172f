"""The udls ``AudioExample`` protocol-buffer message, encoded by hand.

acids-rave stores every LMDB value as this message (package ``audio_example``)::

    message AudioExample {
      map<string, AudioBuffer> buffers = 1;
      map<string, string> metadata = 2;
      message AudioBuffer {
        repeated int32 shape = 1;          // packed (proto3)
        int32 sampling_rate = 2;
        bytes data = 3;
        Precision precision = 4;
        map<string, string> metadata = 5;
      }
      enum Precision { FLOAT16 = 0; FLOAT32 = 1; FLOAT64 = 2;
                       INT16 = 3; INT32 = 4; INT64 = 5; }
    }

Why by hand: the message is tiny and fixed, and a protobuf runtime plus
generated code would be a dependency for ~80 lines of wire format. The test
suite cross-checks this codec against the real protobuf library.

acids-rave's own preprocess wrote ``shape`` in *bytes* rather than samples in
some versions, so :func:`decode_example` derives the frame count from the data
length and uses ``shape`` only for the channel count when it is consistent.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PRECISION_DTYPES: dict[int, str] = {
    0: "<f2",
    1: "<f4",
    2: "<f8",
    3: "<i2",
    4: "<i4",
    5: "<i8",
}
INT16 = 3


@dataclass
class AudioBuffer:
    data: bytes = b""
    sampling_rate: int = 0
    shape: list[int] = field(default_factory=list)
    precision: int = INT16
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class AudioExample:
    buffers: dict[str, AudioBuffer] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


# --- wire format helpers ----------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0:  # int32 negatives are sign-extended to 10 bytes
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")


def _key(field_no: int, wire_type: int) -> bytes:
    return _varint((field_no << 3) | wire_type)


def _len_field(field_no: int, payload: bytes) -> bytes:
    return _key(field_no, 2) + _varint(len(payload)) + payload


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _fields(buf: bytes):
    """Yield (field_no, wire_type, value) for every field in ``buf``."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field_no, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field_no, wire, value


def _encode_str_map(field_no: int, mapping: dict[str, str]) -> bytes:
    out = b""
    for k in sorted(mapping):
        entry = _len_field(1, k.encode()) + _len_field(2, str(mapping[k]).encode())
        out += _len_field(field_no, entry)
    return out


def _decode_map_entry(buf: bytes) -> tuple[bytes, bytes]:
    key, value = b"", b""
    for no, _, val in _fields(buf):
        if no == 1:
            key = val
        elif no == 2:
            value = val
    return key, value


# --- messages ----------------------------------------------------------------


def encode_buffer(b: AudioBuffer) -> bytes:
    out = b""
    if b.shape:
        out += _len_field(1, b"".join(_varint(s) for s in b.shape))
    if b.sampling_rate:
        out += _key(2, 0) + _varint(b.sampling_rate)
    if b.data:
        out += _len_field(3, b.data)
    if b.precision:
        out += _key(4, 0) + _varint(b.precision)
    out += _encode_str_map(5, b.metadata)
    return out


def decode_buffer(buf: bytes) -> AudioBuffer:
    b = AudioBuffer()
    for no, wire, val in _fields(buf):
        if no == 1:
            if wire == 2:  # packed
                pos = 0
                while pos < len(val):
                    s, pos = _read_varint(val, pos)
                    b.shape.append(_int32(s))
            else:
                b.shape.append(_int32(val))
        elif no == 2:
            b.sampling_rate = _int32(val)
        elif no == 3:
            b.data = bytes(val)
        elif no == 4:
            b.precision = val
        elif no == 5:
            k, v = _decode_map_entry(val)
            b.metadata[k.decode()] = v.decode()
    return b


def encode(example: AudioExample) -> bytes:
    out = b""
    for name in sorted(example.buffers):
        entry = _len_field(1, name.encode()) + _len_field(2, encode_buffer(example.buffers[name]))
        out += _len_field(1, entry)
    out += _encode_str_map(2, example.metadata)
    return out


def decode(buf: bytes) -> AudioExample:
    ex = AudioExample()
    for no, wire, val in _fields(buf):
        if wire != 2:
            continue
        k, v = _decode_map_entry(val)
        if no == 1:
            ex.buffers[k.decode()] = decode_buffer(v)
        elif no == 2:
            ex.metadata[k.decode()] = v.decode()
    return ex


# --- the waveform convenience layer used by the writer and the readers ---------


def waveform_frame(channels: int, frames: int, sampling_rate: int,
                   metadata: dict[str, str] | None = None) -> tuple[bytes, bytes]:
    """(head, tail): the AudioExample of an int16 waveform [channels, frames]
    is ``head + data + tail``, ``data`` being its samples, little-endian, in
    C order.

    The same bytes :func:`encode` gives (``data`` is the message's only large
    field and sits inside the buffer's length-delimited fields, so only its
    length shapes head and tail). A writer can then send the samples straight
    from the array instead of building the value out of copies of them: the
    generic encoder copies a 512 KB example four times over.
    """
    nbytes = 2 * channels * frames
    buffer_head = _len_field(1, b"".join(_varint(s) for s in (channels, frames)))
    if sampling_rate:
        buffer_head += _key(2, 0) + _varint(sampling_rate)
    if nbytes:
        buffer_head += _key(3, 2) + _varint(nbytes)
    buffer_tail = _key(4, 0) + _varint(INT16) + _encode_str_map(5, {})
    buffer_len = len(buffer_head) + nbytes + len(buffer_tail)
    entry_head = _len_field(1, b"waveform") + _key(2, 2) + _varint(buffer_len)
    head = _key(1, 2) + _varint(len(entry_head) + buffer_len) + entry_head + buffer_head
    return head, buffer_tail + _encode_str_map(2, dict(metadata or {}))


def waveform_data(waveform: np.ndarray) -> np.ndarray:
    """The int16 [channels, n] ``waveform`` as the message stores it:
    little-endian, C order (the array itself when it already is)."""
    if waveform.ndim != 2 or waveform.dtype != np.int16:
        raise ValueError("waveform must be int16 with shape [channels, n]")
    return np.ascontiguousarray(waveform, dtype="<i2")


def encode_waveform(waveform: np.ndarray, sampling_rate: int, metadata: dict[str, str] | None = None) -> bytes:
    """Serialise int16 audio ``waveform`` [channels, n] as an AudioExample."""
    data = waveform_data(waveform)
    head, tail = waveform_frame(int(data.shape[0]), int(data.shape[1]), int(sampling_rate), metadata)
    return b"".join((head, data.reshape(-1).view(np.uint8), tail))  # the samples' bytes, not copied first


def decode_waveform(value: bytes, channels: int | None = None) -> tuple[np.ndarray, int]:
    """Parse an AudioExample value into (waveform [channels, n], sampling_rate).

    The data keeps its stored precision (int16 for every dataset we write).
    ``channels`` (from metadata.yaml) wins over ``shape``, which acids-rave's
    preprocess filled in bytes in some versions; the data length is the truth.
    """
    ex = decode(value)
    if "waveform" not in ex.buffers:
        raise ValueError("AudioExample has no 'waveform' buffer")
    b = ex.buffers["waveform"]
    dtype = PRECISION_DTYPES.get(b.precision)
    if dtype is None:
        raise ValueError(f"unknown precision {b.precision}")
    flat = np.frombuffer(b.data, dtype=dtype)
    if channels is None:
        channels = b.shape[0] if len(b.shape) == 2 and b.shape[0] > 0 else 1
        if flat.size % channels:
            channels = 1
    if flat.size % channels:
        raise ValueError(f"{flat.size} samples do not split into {channels} channels")
    return flat.reshape(channels, -1), b.sampling_rate
