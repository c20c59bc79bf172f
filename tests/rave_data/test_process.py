"""Signal steps of prep: channels, resampling, loudness, normalisation, trimming."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rave_data.process.channels import to_channels
from rave_data.process.loudness import LoudnessMeter, PeakMeter, k_weighting
from rave_data.process.normalize import normalize_gain
from rave_data.process.resample import StreamResampler, out_frames, reduced_ratio, resample
from rave_data.process.trim import SilenceTrimmer
from tests.audio import concat, noise, silence, sine

ROOT = Path(__file__).resolve().parents[2]


def stream(step, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Feed ``x`` ([C, n]) to ``step`` in blocks cycling through ``sizes``; return all output."""
    out, pos, i = [], 0, 0
    while pos < x.shape[1]:
        n = sizes[i % len(sizes)]
        out.append(step.process(x[:, pos : pos + n]))
        pos += n
        i += 1
    out.append(step.flush())
    return np.concatenate(out, axis=1)


def db_power(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(np.square(x, dtype=np.float64))) + 1e-30)


# channels -----------------------------------------------------------------------
def test_to_channels_mono_is_mean() -> None:
    x = np.array([[1.0, 0.5], [0.0, -0.5]], np.float32)
    np.testing.assert_allclose(to_channels(x, 1), [[0.5, 0.0]])


def test_to_channels_duplicates_and_cycles() -> None:
    mono = np.array([[0.1, 0.2]], np.float32)
    np.testing.assert_array_equal(to_channels(mono, 3), np.repeat(mono, 3, axis=0))
    st = np.array([[1.0], [2.0]], np.float32)
    assert to_channels(st, 4)[:, 0].tolist() == [1.0, 2.0, 1.0, 2.0]
    six = np.arange(6, dtype=np.float32)[:, None]
    assert to_channels(six, 2)[:, 0].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError):
        to_channels(st, 0)


# resampling --------------------------------------------------------------------
def test_no_alias_from_20k_sine_96k_to_32k() -> None:
    # 20 kHz is above the 16 kHz Nyquist of 32 kHz: everything left is alias (at 12 kHz).
    x = sine(1.0, 96000, 20000, amp=0.9)
    y = resample(x, 96000, 32000)
    assert y.shape == (1, 32000)
    assert db_power(y[:, 1000:-1000]) - db_power(x) < -60.0


@pytest.mark.parametrize("sr_in,sr_out", [(44100, 48000), (48000, 44100), (96000, 48000), (22050, 16000)])
def test_passband_tone_survives_and_length_exact(sr_in: int, sr_out: int) -> None:
    x = sine(0.5, sr_in, 1000, amp=0.5)
    y = resample(x, sr_in, sr_out)
    assert y.shape[1] == round(x.shape[1] * sr_out / sr_in)
    ref = sine(0.5, sr_out, 1000, amp=0.5)[:, : y.shape[1]]
    # A 1 kHz tone comes out as the same tone at the new rate (skip the edges,
    # where the filter sees the zero padding).
    edge = sr_out // 20
    assert np.max(np.abs(y[:, edge:-edge] - ref[:, edge:-edge])) < 1e-3


@pytest.mark.parametrize("sr_in,sr_out", [(44100, 48000), (48000, 44100), (96000, 48000), (96000, 32000)])
def test_streaming_equals_whole(sr_in: int, sr_out: int) -> None:
    x = noise(0.7, sr_in, amp=0.3, channels=2, seed=1)
    whole = resample(x, sr_in, sr_out)
    for sizes in ([1], [17, 4096, 3], [65536]) if sr_in == 44100 else ([1000, 7, 33333], [65536]):
        rs = StreamResampler(sr_in, sr_out, 2)
        got = stream(rs, x, sizes)
        assert got.shape == whole.shape == (2, out_frames(x.shape[1], sr_in, sr_out))
        assert np.max(np.abs(got - whole)) < 1e-5


@pytest.mark.parametrize("n", [0, 1, 2, 146, 147, 148, 1000])
def test_exact_length_for_tiny_inputs(n: int) -> None:
    rs = StreamResampler(44100, 48000, 1)
    y = stream(rs, np.ones((1, n), np.float32), [5])
    assert y.shape == (1, (2 * n * 48000 + 44100) // (2 * 44100))


def test_odd_rate_uses_bounded_kernel_and_keeps_length() -> None:
    # gcd(22254, 48000) = 6: the exact kernel would be 24000 x 11000 taps (1 GB).
    orig, new = reduced_ratio(22254, 48000)
    assert orig * new < 1e6 and abs((new / orig) / (48000 / 22254) - 1) < 1e-5 and new / orig <= 48000 / 22254
    x = sine(2.0, 22254, 1000, amp=0.5)
    whole = resample(x, 22254, 48000)
    assert whole.shape[1] == out_frames(x.shape[1], 22254, 48000)
    ref = sine(2.0, 48000, 1000, amp=0.5)[:, : whole.shape[1]]
    assert np.max(np.abs(whole[:, 2000:-2000] - ref[:, 2000:-2000])) < 0.01
    got = stream(StreamResampler(22254, 48000, 1), x, [1000, 4321])
    assert got.shape == whole.shape and np.max(np.abs(got - whole)) < 1e-5


@pytest.mark.parametrize("sr_in,sr_out", [(44100, 48000), (96000, 32000)])
def test_kernel_is_torchaudios_kaiser_sinc(sr_in: int, sr_out: int) -> None:
    # Our numpy kernel must stay the filter torchaudio documents and tests.
    torchaudio = pytest.importorskip("torchaudio")
    from rave_data.process.resample import BETA, LOWPASS_FILTER_WIDTH, ROLLOFF, sinc_kernel

    orig, new = reduced_ratio(sr_in, sr_out)
    ours, width = sinc_kernel(orig, new, LOWPASS_FILTER_WIDTH, ROLLOFF, BETA)
    ref = torchaudio.transforms.Resample(
        sr_in, sr_out, resampling_method="sinc_interp_kaiser",
        lowpass_filter_width=LOWPASS_FILTER_WIDTH, rolloff=ROLLOFF, beta=BETA,
    )
    assert width == ref.width
    assert np.max(np.abs(ours - ref.kernel[:, 0, :].numpy())) < 1e-5


def test_processing_never_imports_torch() -> None:
    # torch (CUDA build) would put ~600 MB in every prep worker.
    code = (
        "import sys, numpy as np\n"
        "from rave_data.io.decode import open_audio\n"
        "from rave_data.process import StreamResampler, LoudnessMeter, SilenceTrimmer, to_channels\n"
        "x = np.random.default_rng(0).standard_normal((2, 50000)).astype(np.float32)\n"
        "r = StreamResampler(44100, 48000, 1); y = r.process(to_channels(x, 1)); r.flush()\n"
        "LoudnessMeter(48000, 1).feed(y); SilenceTrimmer(48000, 1, -60.0, 1.0).process(y)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_same_rate_is_passthrough() -> None:
    x = noise(0.1, 16000)
    rs = StreamResampler(16000, 16000, 1)
    assert np.array_equal(stream(rs, x, [100]), x)


def test_resampler_rejects_bad_blocks() -> None:
    rs = StreamResampler(44100, 48000, 2)
    with pytest.raises(ValueError):
        rs.process(np.zeros((1, 10), np.float32))
    rs.flush()
    with pytest.raises(RuntimeError):
        rs.process(np.zeros((2, 10), np.float32))


# loudness ----------------------------------------------------------------------
def test_k_weighting_matches_bs1770_table_at_48k() -> None:
    (pb, pa), (rb, ra) = k_weighting(48000)
    np.testing.assert_allclose(pb, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-8)
    np.testing.assert_allclose(pa, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    np.testing.assert_allclose(rb, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(ra, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-8)


@pytest.mark.parametrize("sr", [48000, 44100])
def test_sine_at_minus_20_dbfs_reads_minus_23_lufs(sr: int) -> None:
    m = LoudnessMeter(sr, 1)
    m.feed(sine(5.0, sr, 997, amp=0.1))
    assert m.integrated_lufs() == pytest.approx(-23.0, abs=0.3)


def test_stereo_adds_power_and_silence_is_gated() -> None:
    sr = 48000
    tone = sine(3.0, sr, 997, amp=0.1, channels=1)
    m = LoudnessMeter(sr, 2)
    # Identical channels: +3 dB; the long silence after it is gated out.
    m.feed(concat(np.vstack([tone, tone]), silence(10.0, sr, channels=2)))
    assert m.integrated_lufs() == pytest.approx(-20.0, abs=0.3)


def test_silence_and_short_input_are_minus_inf() -> None:
    m = LoudnessMeter(48000, 1)
    m.feed(silence(2.0, 48000))
    assert m.integrated_lufs() == float("-inf")
    short = LoudnessMeter(48000, 1)
    short.feed(sine(0.3, 48000, amp=0.5))  # shorter than one 400 ms block
    assert short.integrated_lufs() == float("-inf")


def test_loudness_streaming_equals_one_shot() -> None:
    sr = 44100
    x = concat(noise(2.0, sr, amp=0.2, channels=2), sine(1.5, sr, 300, amp=0.05, channels=2))
    one = LoudnessMeter(sr, 2)
    one.feed(x)
    many = LoudnessMeter(sr, 2)
    for s in range(0, x.shape[1], 1237):
        many.feed(x[:, s : s + 1237])
    assert many.integrated_lufs() == pytest.approx(one.integrated_lufs(), abs=1e-9)


def test_peak_meter() -> None:
    p = PeakMeter()
    p.feed(np.array([[0.1, -0.7]], np.float32))
    p.feed(np.zeros((1, 0), np.float32))
    p.feed(np.array([[0.3]], np.float32))
    assert p.peak == pytest.approx(0.7)


# normalisation -----------------------------------------------------------------
def test_normalize_modes() -> None:
    assert normalize_gain("none", 0.5, -30.0, -23.0, -1.0) == 1.0
    assert 0.5 * normalize_gain("peak", 0.5, -30.0, -23.0, peak_db=-1.0) == pytest.approx(10 ** (-1 / 20))
    # -33 LUFS to -23: +10 dB, peak 0.1 -> 0.316, under the -1 dB ceiling.
    assert normalize_gain("loudness", 0.1, -33.0, -23.0, -1.0) == pytest.approx(10 ** 0.5)


def test_loudness_gain_is_limited_by_peak() -> None:
    g = normalize_gain("loudness", 0.5, -40.0, target_lufs=-23.0, peak_db=-1.0)
    assert 0.5 * g == pytest.approx(10 ** (-1 / 20))


def test_normalize_silence_and_unknown_mode() -> None:
    assert normalize_gain("peak", 0.0, float("-inf"), -23.0, -1.0) == 1.0
    assert normalize_gain("loudness", 0.2, float("-inf"), -23.0, -1.0) == 1.0
    with pytest.raises(ValueError, match="unknown normalize mode"):
        normalize_gain("rms", 0.5, -20.0, -23.0, -1.0)


# trimming ----------------------------------------------------------------------
SR = 16000


def speech_like() -> np.ndarray:
    """2 s silence + 1 s tone + 3 s silence + 1 s tone + 2 s silence."""
    return concat(silence(2, SR), sine(1, SR, 440), silence(3, SR), sine(1, SR, 660), silence(2, SR))


def test_trim_edges_and_long_pause() -> None:
    x = speech_like()
    t = SilenceTrimmer(SR, 1, silence_db=-60.0, max_silence=1.0)
    y = stream(t, x, [4096])
    assert y.shape[1] == pytest.approx(3 * SR, abs=0.02 * SR)  # 1 s tone + 1 s pause + 1 s tone
    assert t.removed_frames == x.shape[1] - y.shape[1]
    assert t.removed_frames == pytest.approx(6 * SR, abs=0.02 * SR)
    # The kept pause sits between the tones: 0.5 s on each side of the cut.
    mid = y[0, int(1.1 * SR) : int(1.9 * SR)]
    assert np.max(np.abs(mid)) < 1e-3
    assert np.max(np.abs(y[0, : int(0.9 * SR)])) > 0.4 and np.max(np.abs(y[0, -int(0.9 * SR) :])) > 0.4


def test_trim_is_block_size_independent() -> None:
    x = concat(speech_like(), noise(0.3, SR, amp=0.2), silence(1.7, SR))
    ref = stream(SilenceTrimmer(SR, 1, -60.0, 1.0), x, [x.shape[1]])
    for sizes in ([1], [7, 160, 999], [65536]):
        got = stream(SilenceTrimmer(SR, 1, -60.0, 1.0), x, sizes)
        assert np.array_equal(got, ref)


def test_noise_below_threshold_counts_as_silence() -> None:
    quiet = noise(4.0, SR, amp=10 ** (-70 / 20))  # RMS -70 dBFS
    x = concat(sine(1, SR), quiet, sine(1, SR))
    t = SilenceTrimmer(SR, 1, silence_db=-60.0, max_silence=1.0)
    y = stream(t, x, [5000])
    assert y.shape[1] == pytest.approx(3 * SR, abs=0.02 * SR)


def test_short_pause_kept_whole_and_max_silence_zero() -> None:
    x = concat(sine(1, SR), silence(0.5, SR), sine(1, SR))
    assert stream(SilenceTrimmer(SR, 1, -60.0, max_silence=1.0), x, [3000]).shape[1] == x.shape[1]
    t = SilenceTrimmer(SR, 1, -60.0, max_silence=0.0)
    assert stream(t, x, [3000]).shape[1] == pytest.approx(2 * SR, abs=0.02 * SR)


def test_splice_has_no_click() -> None:
    # A hum at -65 dBFS (below the threshold) is cut in the middle: the splice
    # is faded, so no sample-to-sample step exceeds the hum's own slope.
    hum = sine(5.0, SR, 50, amp=10 ** (-62 / 20))
    x = concat(sine(1, SR, 440, amp=0.3), hum, sine(1, SR, 440, amp=0.3))
    y = stream(SilenceTrimmer(SR, 1, -60.0, max_silence=1.0), x, [2048])
    pause = y[0, int(1.02 * SR) : int(1.98 * SR)]
    natural = np.max(np.abs(np.diff(hum[0])))
    assert np.max(np.abs(np.diff(pause))) <= natural * 1.01


def test_keep_edges_keeps_half_pause_next_to_sound() -> None:
    x = speech_like()
    t = SilenceTrimmer(SR, 1, -60.0, max_silence=1.0, trim_edges=False)
    y = stream(t, x, [4096])
    assert y.shape[1] == pytest.approx(4 * SR, abs=0.02 * SR)  # + 0.5 s at each edge


def test_all_silent_input_is_removed_entirely() -> None:
    t = SilenceTrimmer(SR, 2, -60.0, 1.0)
    y = stream(t, silence(3, SR, channels=2), [10000])
    assert y.shape == (2, 0)
    assert t.removed_frames == 3 * SR


def test_trimmer_memory_is_bounded_for_long_silence() -> None:
    import tracemalloc

    t = SilenceTrimmer(SR, 1, -60.0, max_silence=1.0)
    t.process(sine(0.5, SR))
    quiet = silence(1, SR)
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        for _ in range(200):  # 200 s of silence, one second at a time
            assert t.process(quiet).shape[1] == 0  # nothing is known to be kept yet
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # What the trimmer holds on to (up to max_silence of samples to keep, plus
    # the run being measured and its work buffers): seconds, never the 200 s fed.
    assert held <= 3 * SR * 4


# the whole chain ------------------------------------------------------------------
def run_chain(path: Path, block: int) -> tuple[np.ndarray, float, float]:
    """decode -> mono -> 48 kHz -> trim -> meters, as prep runs it: (kept audio, lufs, peak)."""
    from rave_data.io.decode import open_audio

    with open_audio(path) as src:
        rs = StreamResampler(src.info.sr, 48000, 1)
        trim = SilenceTrimmer(48000, 1, -60.0, 1.0)
        loud, peak = LoudnessMeter(48000, 1), PeakMeter()
        kept = []
        for b in src.blocks(block):
            kept.append(trim.process(rs.process(to_channels(b, 1))))
        kept += [trim.process(rs.flush()), trim.flush()]
    for k in kept:
        loud.feed(k)
        peak.feed(k)
    return np.concatenate(kept, axis=1), loud.integrated_lufs(), peak.peak


def test_chain_is_block_size_independent(tmp_path: Path) -> None:
    from tests.audio import write

    x = concat(silence(1.0, 44100, 2), sine(2.0, 44100, 440, 0.3, 2), silence(2.5, 44100, 2), noise(1.0, 44100, 0.2, 2))
    path = write(tmp_path / "take.flac", x, 44100, subtype="PCM_24")
    ref, lufs, peak = run_chain(path, 1 << 17)
    assert ref.shape[1] == pytest.approx(4.0 * 48000, abs=0.03 * 48000)  # 2 s tone + 1 s pause + 1 s noise
    for block in (1000, 4097):
        got, lufs2, peak2 = run_chain(path, block)
        assert got.shape == ref.shape and np.max(np.abs(got - ref)) < 1e-5
        assert lufs2 == pytest.approx(lufs, abs=1e-6) and peak2 == pytest.approx(peak, abs=1e-5)


def test_chain_memory_stays_bounded_on_a_long_96k_file(tmp_path: Path) -> None:
    import soundfile as sf
    import tracemalloc

    # 60 s of 96 kHz stereo (46 MB as float32) written a second at a time.
    path = tmp_path / "long.wav"
    with sf.SoundFile(str(path), "w", 96000, 2, "PCM_16") as f:
        for k in range(60):
            f.write((sine(1.0, 96000, 300 + k, 0.3, 2) if k % 10 else silence(1.0, 96000, 2)).T)
    from rave_data.io.decode import open_audio

    # Built (and their imports done) before measuring: only streaming counts.
    rs, trim, loud = StreamResampler(96000, 48000, 1), SilenceTrimmer(48000, 1, -60.0, 1.0), LoudnessMeter(48000, 1)
    tracemalloc.start()
    try:
        with open_audio(path) as src:
            n = 0
            for b in src.blocks(1 << 16):
                y = trim.process(rs.process(to_channels(b, 1)))
                loud.feed(y)
                n += y.shape[1]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n > 50 * 48000
    assert peak < 8_000_000  # measured ~3 MB: a few blocks, not the 46 MB file

