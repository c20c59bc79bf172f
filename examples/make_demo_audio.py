"""Generate a small demo corpus like a real user's folder of recordings.

    python examples/make_demo_audio.py DIR

About three and a half minutes of synthetic audio in mixed formats (wav, flac,
ogg, mp3, m4a), rates (44.1, 48 and 96 kHz),
mono and stereo, 16 and 24 bit, with long silences for ``prep`` to trim:
a "reading" (voice-like vowel pulses in phrases), an "album" track (chords),
a "field recording" (filtered noise with quiet gaps), an "interview" and a
synth loop. Deterministic (seeded). Needs numpy and soundfile only.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

RNG = np.random.default_rng(2024)


def _env(n: int, sr: int, attack: float = 0.01, release: float = 0.05) -> np.ndarray:
    """Linear attack/release envelope of n samples."""
    e = np.ones(n, np.float32)
    a, r = min(n // 2, int(attack * sr)), min(n // 2, int(release * sr))
    if a:
        e[:a] = np.linspace(0, 1, a)
    if r:
        e[-r:] = np.linspace(1, 0, r)
    return e


def voice(seconds: float, sr: int, f0: float) -> np.ndarray:
    """Phrases of voice-like syllables (glottal pulse train through two
    formant resonances), separated by pauses: mono [n]."""
    out: list[np.ndarray] = []
    total = 0
    while total < seconds * sr:
        for _ in range(int(RNG.integers(3, 9))):  # one phrase of syllables
            n = int(RNG.uniform(0.12, 0.35) * sr)
            t = np.arange(n) / sr
            pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * RNG.uniform(2, 5) * t))
            phase = np.cumsum(pitch / sr)
            pulses = (np.mod(phase, 1.0) < 0.08).astype(np.float32)
            f1, f2 = RNG.uniform(300, 800), RNG.uniform(900, 2500)
            syl = sum(np.sin(2 * np.pi * f * t) * np.convolve(pulses, np.exp(-np.arange(200) / (sr / f / 2)), "same")
                      for f in (f1, f2))
            out.append(0.3 * syl.astype(np.float32) * _env(n, sr, 0.02, 0.06))
            out.append(np.zeros(int(RNG.uniform(0.03, 0.12) * sr), np.float32))
        out.append(np.zeros(int(RNG.uniform(0.5, 1.5) * sr), np.float32))  # breath pause
        total = sum(len(x) for x in out)
    y = np.concatenate(out)[: int(seconds * sr)]
    return y / (np.abs(y).max() + 1e-9) * 0.6


def chords(seconds: float, sr: int) -> np.ndarray:
    """A four-chord progression of detuned saw-ish voices: stereo [2, n]."""
    progression = [(220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6), (196.0, 246.9, 311.1)]
    bar = int(2.0 * sr)
    t = np.arange(bar) / sr
    left, right = [], []
    for i in range(int(np.ceil(seconds * sr / bar))):
        notes = progression[i % len(progression)]
        l = sum(sum(np.sin(2 * np.pi * k * f * 1.002 * t) / k for k in range(1, 6)) for f in notes)
        r = sum(sum(np.sin(2 * np.pi * k * f * 0.998 * t) / k for k in range(1, 6)) for f in notes)
        env = _env(bar, sr, 0.05, 0.4)
        left.append(l * env)
        right.append(r * env)
    y = np.stack([np.concatenate(left), np.concatenate(right)])[:, : int(seconds * sr)]
    return (y / np.abs(y).max() * 0.7).astype(np.float32)


def field(seconds: float, sr: int) -> np.ndarray:
    """Filtered noise ('wind, water') with long near-silent gaps: stereo [2, n]."""
    n = int(seconds * sr)
    noise = RNG.standard_normal((2, n)).astype(np.float32)
    kernel = np.exp(-np.arange(64) / 12.0)
    noise = np.stack([np.convolve(ch, kernel / kernel.sum(), "same") for ch in noise])
    slow = 0.5 + 0.5 * np.sin(2 * np.pi * 0.15 * np.arange(n) / sr)
    y = noise * slow * 0.5
    for start in (0.2, 0.55):  # two 6-second gaps of true silence
        a = int(start * n)
        y[:, a : a + 6 * sr] = 0.0
    return y.astype(np.float32)


def synth(seconds: float, sr: int) -> np.ndarray:
    """A plucked-bass loop with clicks: stereo [2, n]."""
    n = int(seconds * sr)
    y = np.zeros(n, np.float32)
    step = int(0.25 * sr)
    notes = [55.0, 55.0, 82.4, 73.4, 65.4, 55.0, 98.0, 82.4]
    for i, start in enumerate(range(0, n - step, step)):
        t = np.arange(step) / sr
        y[start : start + step] += (np.sign(np.sin(2 * np.pi * notes[i % 8] * t)) * np.exp(-t * 9)).astype(np.float32) * 0.4
        y[start] += 0.8
    return np.stack([y, np.roll(y, int(0.01 * sr))])


def write(path: Path, audio: np.ndarray, sr: int, quiet: bool = False, **kw: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(audio.T if audio.ndim == 2 else audio)
    # One-second writes: libsndfile's vorbis encoder segfaults on one huge write.
    with sf.SoundFile(str(path), "w", sr, 1 if data.ndim == 1 else data.shape[1], **kw) as f:
        for start in range(0, len(data), sr):
            f.write(data[start : start + sr])
    if not quiet:
        print(f"  {path}  ({len(data) / sr:.0f} s, {sr} Hz, {1 if data.ndim == 1 else data.shape[1]} ch)")


def main(out: Path) -> None:
    print(f"writing demo recordings to {out}/")
    silence = lambda s, sr: np.zeros(int(s * sr), np.float32)  # noqa: E731
    reading = np.concatenate([silence(3, 44100), voice(25, 44100, 130), silence(5, 44100), voice(20, 44100, 120), silence(4, 44100)])
    write(out / "readings" / "poem_01.mp3", reading, 44100)
    write(out / "readings" / "poem_02.wav", voice(30, 48000, 210), 48000)
    write(out / "album" / "01 - chords.flac", chords(32, 96000), 96000, subtype="PCM_24")
    write(out / "field" / "river.ogg", field(40, 48000), 48000)
    write(out / "loops" / "bass.wav", synth(20, 44100), 44100)
    interview = np.concatenate([voice(20, 48000, 110), silence(4, 48000), voice(15, 48000, 190)])
    write_m4a(out / "interviews" / "interview.m4a", interview, 48000)


def write_m4a(path: Path, audio: np.ndarray, sr: int) -> None:
    """AAC in m4a through PyAV's encoder (its wheels bundle FFmpeg: no system ffmpeg)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as f:
        stream = f.add_stream("aac", rate=sr, layout="mono")
        stream.bit_rate = 128_000
        for start in range(0, len(audio), sr):
            frame = av.AudioFrame.from_ndarray(audio[None, start : start + sr].astype(np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = sr, start
            for packet in stream.encode(frame):
                f.mux(packet)
        for packet in stream.encode(None):
            f.mux(packet)
    print(f"  {path}  ({len(audio) / sr:.0f} s, {sr} Hz, 1 ch, aac)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/make_demo_audio.py DIR")
    main(Path(sys.argv[1]))
