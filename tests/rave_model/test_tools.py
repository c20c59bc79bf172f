"""Listening tools (rave_model/listen.py, generate.py, cli/tools.py) on a tiny run
trained by the real `ravemodel fit`, and on its exported TorchScript file."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from tests.audio import noise, sine, write  # noqa: E402
from tests.rave_model.datasets import tiny_examples, write_dataset  # noqa: E402

SR, HOP, LATENT = 16000, 64, 8  # the tiny preset
FAST = ["train.vae_steps=4", "train.adversarial_steps=2", "prior.steps=6", "train.val_every=100", "train.ckpt_every=100"]


def ravemodel(bin_dir: Path, *args: object, ok: bool = True) -> subprocess.CompletedProcess:
    """The real command in a subprocess (a few calls: each pays torch's start-up)."""
    out = subprocess.run([str(bin_dir / "ravemodel"), *map(str, args)], capture_output=True, text=True)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def cli(*args: object, ok: bool = True) -> Any:
    """The same command line run in this process (stdout/stderr/exit_code like a subprocess)."""
    from typer.testing import CliRunner

    from rave_model.cli import app

    out = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert out.exit_code == 0, (out.stderr, out.exception)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, bin_dir) -> Path:
    """A run through all three stages, trained by the real CLI."""
    root = tmp_path_factory.mktemp("tools")
    ds = write_dataset(root / "ds", tiny_examples(10))
    sets = [x for kv in FAST for x in ("--set", kv)]
    ravemodel(bin_dir, "fit", ds, "--preset", "tiny", "--run", root / "run", "--device", "cpu", *sets)
    return root / "run"


@pytest.fixture(scope="module")
def exported(run) -> Path:
    from rave_model.export import export_run

    path, info = export_run(run, run.parent / "tiny.ts", fidelity=0.95)
    assert info["prior"]
    return path


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> Path:
    """0.7 s of stereo at 44.1 kHz: the tools must downmix and resample it."""
    x = sine(0.7, 44100, 330.0, channels=2) + noise(0.7, 44100, amp=0.05, channels=2)
    return write(tmp_path_factory.mktemp("audio") / "voice.flac", x, 44100)


def read(path: Path) -> tuple[np.ndarray, int]:
    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return y.T, sr


def test_encode_decode_reconstruct_on_a_run(run, voice, tmp_path, bin_dir):
    n = round(0.7 * SR)  # 11200 samples at the model's rate
    frames = -(-n // HOP)
    ravemodel(bin_dir, "encode", run, voice, "-o", tmp_path / "z.npy")
    z = np.load(tmp_path / "z.npy")
    assert z.shape == (LATENT, frames) and z.dtype == np.float32 and np.isfinite(z).all()
    assert z.std() > 0  # a real trajectory, not a constant

    ravemodel(bin_dir, "decode", run, tmp_path / "z.npy", "-o", tmp_path / "d.wav")
    d, sr = read(tmp_path / "d.wav")
    assert sr == SR and d.shape == (1, frames * HOP) and np.isfinite(d).all()

    ravemodel(bin_dir, "reconstruct", run, voice, "-o", tmp_path / "r.wav")
    r, sr = read(tmp_path / "r.wav")
    assert sr == SR and r.shape == (1, n)
    # A checkpoint encodes the posterior mean and every dimension: reconstruct is
    # exactly decode(encode(x)) with the same seed.
    np.testing.assert_allclose(r, d[:, :n], atol=1e-5)


def test_generate_is_seeded_and_has_the_requested_length(run, tmp_path):
    out = cli("generate", run, "--seconds", "1.3", "--seed", "7", "-o", tmp_path / "a.wav")
    assert "a.wav" in out.stdout
    cli("generate", run, "--seconds", "1.3", "--seed", "7", "-o", tmp_path / "b.wav")
    cli("generate", run, "--seconds", "1.3", "--seed", "8", "-o", tmp_path / "c.wav")
    a, sr = read(tmp_path / "a.wav")
    assert sr == SR and a.shape == (1, round(1.3 * SR)) and np.isfinite(a).all() and np.abs(a).max() > 0
    assert np.array_equal(a, read(tmp_path / "b.wav")[0])
    assert not np.array_equal(a, read(tmp_path / "c.wav")[0])
    # --prime: the 1.3 s just generated (20800 samples = 325 frames) plus 0.25 s more.
    cli("generate", run, "--seconds", "0.25", "--prime", tmp_path / "a.wav", "-t", "0.8", "-o", tmp_path / "p.wav")
    p, _ = read(tmp_path / "p.wav")
    assert p.shape == (1, 325 * HOP + 4000) and np.isfinite(p).all()


def test_generate_library_temperature_and_prime(run, voice):
    from rave_model.generate import generate
    from rave_model.listen import load_listener

    listener = load_listener(run)
    assert listener.prior is not None
    warm = generate(listener, 0.5, temperature=1.0, seed=1)
    cold = generate(listener, 0.5, temperature=0.0, seed=1)
    assert warm.shape == cold.shape == (1, SR // 2)
    assert not np.array_equal(warm, cold)
    # Temperature 0 takes the most likely bins: only dither and decoder noise stay random.
    assert np.isfinite(cold).all()

    primed = generate(listener, 0.5, seed=1, prime=voice)
    prime_frames = -(-round(0.7 * SR) // HOP)
    assert primed.shape == (1, prime_frames * HOP + SR // 2) and np.isfinite(primed).all()


def test_tools_on_an_exported_file(exported, voice, tmp_path):
    from rave_model.listen import load_listener

    ts = load_listener(exported)
    assert ts.scripted and (ts.sr, ts.channels, ts.hop) == (SR, 1, HOP)
    dims = ts.latent_size
    assert 1 <= dims <= LATENT
    frames = -(-round(0.7 * SR) // HOP)

    cli("encode", exported, voice, "-o", tmp_path / "z.npy")
    z = np.load(tmp_path / "z.npy")
    assert z.shape == (dims, frames)
    cli("decode", exported, tmp_path / "z.npy", "-o", tmp_path / "d.wav")
    assert read(tmp_path / "d.wav")[0].shape == (1, frames * HOP)
    cli("reconstruct", exported, voice, "-o", tmp_path / "r.wav")
    r, sr = read(tmp_path / "r.wav")
    assert sr == SR and r.shape == (1, round(0.7 * SR)) and np.isfinite(r).all()
    cli("generate", exported, "--seconds", "0.5", "--seed", "2", "-o", tmp_path / "g.wav")
    g, _ = read(tmp_path / "g.wav")
    assert g.shape == (1, SR // 2) and np.isfinite(g).all()


def test_checkpoint_latents_decode_on_the_export(run, exported, voice):
    """Latents from the run (all dimensions) decode on the export (it keeps the ones it needs)."""
    from rave_model.listen import decode_latents, encode_file, load_listener

    z = encode_file(load_listener(run), voice)
    ts = load_listener(exported)
    y = decode_latents(ts, z)
    assert z.shape[0] == LATENT and y.shape == (1, z.shape[1] * HOP)
    # The export's encode is the run's, cropped to its dimensions.
    np.testing.assert_allclose(encode_file(ts, voice), z[: ts.latent_size], atol=1e-4)


def test_bad_inputs_give_one_line_errors_and_status_2(run, tmp_path, bin_dir):
    bad_audio = tmp_path / "broken.wav"
    bad_audio.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio at all\n")
    bad_npy = tmp_path / "bad.npy"
    np.save(bad_npy, np.zeros((3,), np.int32))
    nan_npy = tmp_path / "nan.npy"
    np.save(nan_npy, np.full((LATENT, 4), np.nan, np.float32))
    subprocess_cases = [
        (("encode", tmp_path / "no-such-run", bad_audio, "-o", tmp_path / "x.npy"), "no-such-run"),
        (("reconstruct", run, notes, "-o", tmp_path / "x.wav"), "notes.txt"),
    ]
    cases = [
        (("encode", run, bad_audio, "-o", tmp_path / "x.npy"), "broken.wav"),
        (("encode", run, tmp_path / "missing.wav", "-o", tmp_path / "x.npy"), "missing.wav"),
        (("decode", run, bad_npy, "-o", tmp_path / "x.wav"), "bad.npy"),
        (("decode", run, nan_npy, "-o", tmp_path / "x.wav"), "NaN"),
        (("generate", run, "--seconds", "0", "-o", tmp_path / "x.wav"), "--seconds"),
        (("generate", run, "--prime", notes, "-o", tmp_path / "x.wav"), "notes.txt"),
        (("reconstruct", bad_audio, bad_audio, "-o", tmp_path / "x.wav"), "broken.wav"),
    ]
    # The important cases through a real subprocess, the rest in-process (same code path).
    outs = [(args, needle, ravemodel(bin_dir, *args, ok=False)) for args, needle in subprocess_cases]
    outs += [(args, needle, cli(*args, ok=False)) for args, needle in cases]
    for args, needle, out in outs:
        code = getattr(out, "returncode", None)
        code = out.exit_code if code is None else code
        assert code == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in out.stderr, out.stderr
        assert lines[0].startswith(f"ravemodel {args[0]}: error: "), lines
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".x.*"))  # nothing half-written


def test_an_unwritable_output_is_a_failure_while_running(run, tmp_path, voice):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    out = cli("reconstruct", run, voice, "-o", blocker / "r.wav", ok=False)
    assert out.exit_code == 1, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "file" in out.stderr


def test_ctrl_c_exits_130_and_writes_nothing(run, tmp_path, voice, monkeypatch):
    import rave_model.listen

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rave_model.listen, "reconstruct_file", interrupted)
    out = cli("reconstruct", run, voice, "-o", tmp_path / "r.wav", ok=False)
    assert out.exit_code == 130 and "interrupted" in out.stderr
    assert not list(tmp_path.glob("*r.wav*"))


def test_generate_without_a_prior_says_so(tmp_path):
    from rave_model.train.runner import fit

    ds = write_dataset(tmp_path / "ds", tiny_examples(10))
    fit(ds, tmp_path / "run", preset="tiny", device="cpu",
        overrides=["train.vae_steps=2", "train.adversarial_steps=1", "prior.steps=0"])
    out = cli("generate", tmp_path / "run", "-o", tmp_path / "g.wav", ok=False)
    assert out.exit_code == 2 and "no trained prior" in out.stderr
    assert not (tmp_path / "g.wav").exists()
