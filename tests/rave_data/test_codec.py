"""The hand-written AudioExample codec agrees with the real protobuf library.

The schema is rebuilt here from its field numbers with protobuf's descriptor
API, so both directions (ours -> protobuf, protobuf -> ours) are checked on the
bytes acids-rave's preprocess produces.
"""
from __future__ import annotations

import numpy as np
import pytest

from rave_data.dataset import codec

pb = pytest.importorskip("google.protobuf")
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

F = descriptor_pb2.FieldDescriptorProto


def _audio_example_class():
    fdp = descriptor_pb2.FileDescriptorProto(name="ae_test.proto", package="audio_example", syntax="proto3")
    msg = fdp.message_type.add(name="AudioExample")
    prec = msg.enum_type.add(name="Precision")
    for i, name in enumerate(["FLOAT16", "FLOAT32", "FLOAT64", "INT16", "INT32", "INT64"]):
        prec.value.add(name=name, number=i)

    def str_map(parent, entry_name):
        e = parent.nested_type.add(name=entry_name)
        e.options.map_entry = True
        e.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        e.field.add(name="value", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)

    buf = msg.nested_type.add(name="AudioBuffer")
    buf.field.add(name="shape", number=1, type=F.TYPE_INT32, label=F.LABEL_REPEATED)
    buf.field.add(name="sampling_rate", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    buf.field.add(name="data", number=3, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    buf.field.add(name="precision", number=4, type=F.TYPE_ENUM, label=F.LABEL_OPTIONAL,
                  type_name=".audio_example.AudioExample.Precision")
    str_map(buf, "MetadataEntry")
    buf.field.add(name="metadata", number=5, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                  type_name=".audio_example.AudioExample.AudioBuffer.MetadataEntry")
    be = msg.nested_type.add(name="BuffersEntry")
    be.options.map_entry = True
    be.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    be.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                 type_name=".audio_example.AudioExample.AudioBuffer")
    msg.field.add(name="buffers", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                  type_name=".audio_example.AudioExample.BuffersEntry")
    str_map(msg, "MetadataEntry")
    msg.field.add(name="metadata", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                  type_name=".audio_example.AudioExample.MetadataEntry")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("audio_example.AudioExample"))


AE = _audio_example_class()


def test_ours_parses_with_protobuf():
    wave = (np.arange(2 * 300, dtype=np.int16) - 300).reshape(2, 300)
    raw = codec.encode_waveform(wave, 48000, {"source": "a.wav"})
    msg = AE()
    msg.ParseFromString(raw)
    b = msg.buffers["waveform"]
    assert list(b.shape) == [2, 300]
    assert b.sampling_rate == 48000
    assert b.precision == 3  # INT16
    assert dict(msg.metadata) == {"source": "a.wav"}
    np.testing.assert_array_equal(np.frombuffer(b.data, "<i2").reshape(2, 300), wave)


def test_protobuf_bytes_parse_with_ours():
    # Exactly what acids-rave's preprocess writes: shape filled in bytes, no metadata.
    samples = np.random.default_rng(0).integers(-32768, 32767, 1024, dtype=np.int16)
    msg = AE()
    buf = msg.buffers["waveform"]
    buf.shape.extend([1, samples.size * 2])
    buf.sampling_rate = 44100
    buf.data = samples.tobytes()
    buf.precision = 3
    wave, sr = codec.decode_waveform(msg.SerializeToString(), channels=1)
    assert sr == 44100 and wave.shape == (1, 1024)
    np.testing.assert_array_equal(wave[0], samples)
    # Without the channel count, the inconsistent shape must not be trusted.
    wave2, _ = codec.decode_waveform(msg.SerializeToString())
    assert wave2.shape == (1, 1024)


def test_round_trip_and_errors():
    wave = np.zeros((1, 10), np.int16)
    ex = codec.decode(codec.encode_waveform(wave, 16000))
    assert ex.buffers["waveform"].sampling_rate == 16000
    with pytest.raises(ValueError):
        codec.encode_waveform(wave.astype(np.float32), 16000)
    with pytest.raises(ValueError):
        codec.decode(b"\x0a\xff")  # length beyond the end


@pytest.mark.parametrize("channels,frames,sr,meta", [
    (1, 262144, 48000, None),  # a default-size example: lengths need 3-byte varints
    (2, 300, 44100, {"source": "a.wav", "k": "v"}),
    (1, 0, 16000, None),  # no data field at all
    (3, 5, 0, None),  # no sampling_rate field
])
def test_waveform_frame_is_the_generic_encoding(channels, frames, sr, meta):
    # encode_waveform (and prep's workers) build values as head + samples + tail;
    # that must be byte for byte the generic encoder's and protobuf's own output.
    wave = np.random.default_rng(frames).integers(-32768, 32767, (channels, frames), dtype=np.int16)
    generic = codec.encode(codec.AudioExample(
        buffers={"waveform": codec.AudioBuffer(data=wave.astype("<i2").tobytes(), sampling_rate=sr,
                                               shape=[channels, frames], precision=codec.INT16)},
        metadata=dict(meta or {})))
    head, tail = codec.waveform_frame(channels, frames, sr, meta)
    assert head + wave.astype("<i2").tobytes() + tail == generic
    assert codec.encode_waveform(wave, sr, meta) == generic
    msg = AE()
    msg.ParseFromString(generic)
    assert msg.SerializeToString(deterministic=True) == generic
