"""A deterministic, musically varied synthetic corpus for bench_parity_train.py.

    .venv/bin/python bench/bench_parity_train_corpus.py OUT [--files 19] [--file-samples N] [--holdout 2]

Writes ``OUT/train/piece_XX.wav`` (the training recordings) and
``OUT/holdout/clip_XX.wav`` (evaluation clips made by the same generator with
other seeds, never in the training set): 44.1 kHz mono, 16-bit, peak at -1 dBFS.

Each piece is one seeded "arrangement": a tempo, a key and scale, a chord
progression, and a band of 2-4 instruments drawn from the timbres below, playing
a melody, a bass line and sustained chords over a drum pattern:

- harmonic voices: additive partials with a per-instrument spectral tilt, odd-only
  (clarinet-like) or all partials, optional inharmonicity (piano/bell stretch),
  ADSR or plucked (exponential) envelopes, vibrato (4-7 Hz) on sustained notes;
- detuned saw pads through a one-pole low-pass that opens and closes slowly;
- drums: kick (falling sine sweep), snare (noise burst + tone), hi-hat (differenced noise).

The music never stops for more than a few milliseconds (a pad or a drone is always
on), so ``ravedata prep``'s silence trimming leaves the length of each piece as
generated and the number of examples is known in advance. Needs numpy, scipy and soundfile.
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

SR = 44100
SCALES = {
    "major": [0, 2, 4, 5, 7, 9, 11],
    "minor": [0, 2, 3, 5, 7, 8, 10],
    "dorian": [0, 2, 3, 5, 7, 9, 10],
    "pentatonic": [0, 2, 4, 7, 9],
}


def midi_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69) / 12)


def adsr(n: int, a: float, d: float, s: float, r: float) -> np.ndarray:
    """Envelope of n samples: attack a s, decay d s to level s, release r s at the end."""
    e = np.full(n, s, np.float64)
    na, nd, nr = (min(n, max(1, int(v * SR))) for v in (a, d, r))
    e[:na] = np.linspace(0, 1, na)
    if na < n:
        m = min(nd, n - na)
        e[na : na + m] = np.linspace(1, s, nd)[:m]
    e[-nr:] *= np.linspace(1, 0, nr)
    return e


def harmonic_note(rng: np.random.Generator, inst: dict, f0: float, n: int) -> np.ndarray:
    """One note of a harmonic instrument: [n] float64."""
    t = np.arange(n) / SR
    vib = 0.0
    if inst["vibrato"] and n > 0.3 * SR:
        rate, depth = rng.uniform(4, 7), rng.uniform(0.002, 0.008)
        onset = np.clip((t - 0.15) / 0.3, 0, 1)
        vib = depth * onset * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.28))
    phase = 2 * np.pi * f0 * np.cumsum(1 + vib) / SR
    y = np.zeros(n)
    for k in range(1, inst["partials"] + 1):
        if inst["odd"] and k % 2 == 0:
            continue
        fk = k * np.sqrt(1 + inst["stretch"] * k * k)
        if fk * f0 > 0.45 * SR:
            break
        amp = k ** -inst["tilt"]
        if inst["pluck"]:  # higher partials die faster, as on a string
            amp = amp * np.exp(-t * inst["decay"] * (1 + 0.3 * k))
        y += amp * np.sin(fk * phase + rng.uniform(0, 6.28))
    if inst["pluck"]:
        env = adsr(n, 0.003, 0.0, 1.0, 0.02)
    else:
        env = adsr(n, inst["attack"], 0.1, inst["sustain"], min(0.2, n / SR / 3))
    return y * env


def pad_chord(rng: np.random.Generator, freqs: list[float], n: int) -> np.ndarray:
    """Detuned saw pad through a slowly moving one-pole low-pass: [n]."""
    t = np.arange(n) / SR
    y = np.zeros(n)
    for f in freqs:
        for detune in (0.997, 1.0, 1.004):
            ph = (f * detune * t + rng.uniform()) % 1.0
            y += 2 * ph - 1
    cutoff = 600 + 1800 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t))
    alpha = 1 - np.exp(-2 * np.pi * cutoff / SR)
    # One-pole low-pass whose coefficient moves slowly: constant within 512-sample blocks,
    # the filter state carried from block to block.
    out = np.empty(n)
    zi = np.zeros(1)
    for i in range(0, n, 512):
        a = alpha[i : i + 512].mean()
        out[i : i + 512], zi = lfilter([a], [1, a - 1], y[i : i + 512], zi=zi)
    return out * adsr(n, 0.3, 0.2, 0.8, 0.3) / (3 * len(freqs))


def drum(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    t = np.arange(n) / SR
    if kind == "kick":
        f = 45 + 120 * np.exp(-t * 30)
        return np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t * 9)
    noise = rng.standard_normal(n)
    if kind == "snare":
        return 0.6 * noise * np.exp(-t * 22) + 0.5 * np.sin(2 * np.pi * 190 * t) * np.exp(-t * 30)
    hat = np.diff(noise, prepend=0.0)
    return 0.25 * hat * np.exp(-t * rng.uniform(40, 90))


def random_instrument(rng: np.random.Generator) -> dict:
    return {
        "partials": int(rng.integers(4, 24)),
        "tilt": float(rng.uniform(0.6, 2.2)),
        "odd": bool(rng.uniform() < 0.25),
        "stretch": float(rng.choice([0.0, 0.0, 1e-4, 4e-4])),
        "pluck": bool(rng.uniform() < 0.4),
        "decay": float(rng.uniform(1.5, 6.0)),
        "attack": float(rng.uniform(0.005, 0.12)),
        "sustain": float(rng.uniform(0.4, 0.9)),
        "vibrato": bool(rng.uniform() < 0.6),
    }


def add(buf: np.ndarray, start: int, x: np.ndarray, gain: float) -> None:
    end = min(len(buf), start + len(x))
    if end > start:
        buf[start:end] += gain * x[: end - start]


def piece(seed: int, n: int) -> np.ndarray:
    """One seeded arrangement of n samples: float32 [n], peak at -1 dBFS."""
    rng = np.random.default_rng(seed)
    bpm = rng.uniform(70, 150)
    beat = int(60 / bpm * SR)
    root = int(rng.integers(45, 57))
    scale = SCALES[str(rng.choice(list(SCALES)))]
    degrees = [int(d) for d in rng.choice(len(scale), size=4)]
    lead, bass_inst, chord_inst = random_instrument(rng), random_instrument(rng), random_instrument(rng)
    drums = rng.uniform() < 0.8
    out = np.zeros(n + 4 * SR)

    def pitch(degree: int, octave: int = 0) -> float:
        return midi_hz(root + 12 * (octave + degree // len(scale)) + scale[degree % len(scale)])

    bar = 4 * beat
    for b, start in enumerate(range(0, n, bar)):
        d = degrees[b % 4]
        chord = [pitch(d), pitch(d + 2), pitch(d + 4)] + ([pitch(d + 6)] if rng.uniform() < 0.3 else [])
        # Sustained layer: a pad or a held chord on the chord instrument (never silent).
        if rng.uniform() < 0.5:
            add(out, start, pad_chord(rng, chord, bar + SR // 4), 0.5)
        else:
            for f in chord:
                add(out, start, harmonic_note(rng, {**chord_inst, "pluck": False}, f, bar + SR // 4), 0.12)
        # Bass: root and fifth on beats.
        for k in range(4):
            f = pitch(d if k % 2 == 0 else d + 4, -1)
            add(out, start + k * beat, harmonic_note(rng, bass_inst, f, int(beat * rng.uniform(0.6, 1.0))), 0.3)
        # Melody: random walk on the scale, eighths and quarters, some rests and long notes.
        pos, deg = 0, d + len(scale)
        while pos < bar:
            length = int(beat * rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
            deg = int(np.clip(deg + rng.integers(-2, 3), 0, 3 * len(scale)))
            if rng.uniform() < 0.85:
                add(out, start + pos, harmonic_note(rng, lead, pitch(deg), int(length * rng.uniform(0.8, 1.3))), 0.25)
            pos += length
        if drums:
            for k in range(8):
                at = start + k * beat // 2
                if k % 4 == 0 or rng.uniform() < 0.1:
                    add(out, at, drum(rng, "kick", SR // 2), 0.6)
                if k % 4 == 2:
                    add(out, at, drum(rng, "snare", SR // 3), 0.35)
                add(out, at, drum(rng, "hat", SR // 8), 0.3 if k % 2 else 0.18)
        if b % 8 == 7:  # new instruments now and then: timbre changes within a piece
            lead = random_instrument(rng)
    y = out[:n]
    return (y / (np.abs(y).max() + 1e-12) * 10 ** (-1 / 20)).astype(np.float32)


def write(path: Path, y: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, SR, subtype="PCM_16")


def _write_piece(job: tuple[Path, int, int]) -> None:
    path, seed, n = job
    write(path, piece(seed, n))


def make_corpus(out: Path, files: int, file_samples: int, holdout: int, holdout_samples: int) -> tuple[list[Path], list[Path]]:
    """Write the training pieces (seeds 1000+i) and the held-out clips (seeds 9000+i)."""
    train = [out / "train" / f"piece_{i:02d}.wav" for i in range(files)]
    clips = [out / "holdout" / f"clip_{i:02d}.wav" for i in range(holdout)]
    jobs = [(p, 1000 + i, file_samples) for i, p in enumerate(train)] + [(p, 9000 + i, holdout_samples) for i, p in enumerate(clips)]
    jobs = [j for j in jobs if not j[0].exists()]
    # One process per piece: each piece depends on its seed alone, so the files are the same in any order.
    with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1) or 1) as pool:
        list(pool.map(_write_piece, jobs))
    return train, clips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--files", type=int, default=19)
    ap.add_argument("--file-samples", type=int, default=11 * 131072 + 8192)
    ap.add_argument("--holdout", type=int, default=2)
    ap.add_argument("--holdout-samples", type=int, default=6 * SR)
    a = ap.parse_args()
    train, clips = make_corpus(a.out, a.files, a.file_samples, a.holdout, a.holdout_samples)
    print(f"{len(train)} training pieces, {len(clips)} held-out clips under {a.out}")


if __name__ == "__main__":
    main()
