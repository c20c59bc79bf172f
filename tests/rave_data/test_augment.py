"""The augmenter contract, plans, chains and the built-in augmenters, in process."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from rave_data.augment import (
    AugmentError, Augmenter, Chain, ChainStep, Param, Plan, Step, default_plan, get_registry,
    load_plan, parse_plan, variant_rng,
)
from tests.audio import clicks, concat, noise, sine

SR = 44100


def one(name: str, **params) -> Chain:
    entry = get_registry().get(name)
    return Chain([ChainStep(entry.cls(), entry.plugin, entry.cls.check_params(params))])


def spectrum_peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x.mean(axis=0) * np.hanning(x.shape[1])))
    return float(np.argmax(spec) * sr / x.shape[1])


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    """[2, n]: a sine, noise, clicks: tonal, broadband and transient material."""
    return concat(sine(0.5, SR, 330.0, channels=2), noise(0.3, SR, channels=2), clicks(0.4, SR, channels=2))


# --- built-ins: each does what its name says --------------------------------

def test_gain_scales_by_db(voice):
    y = one("gain", db=-6.0).apply(voice, SR)
    assert np.allclose(y, voice * 10 ** (-6 / 20), atol=1e-6)


def test_polarity_inverts(voice):
    assert np.array_equal(one("polarity").apply(voice, SR), -voice)


def test_pitch_shift_moves_the_fundamental_and_keeps_length():
    x = sine(1.0, SR, 440.0)
    y = one("pitch_shift", semitones=12.0).apply(x, SR)
    assert y.shape == x.shape
    assert abs(spectrum_peak_hz(y[:, SR // 4 :], SR) - 880.0) < 15.0


def test_time_stretch_changes_length_not_pitch():
    x = sine(1.0, SR, 440.0)
    y = one("time_stretch", rate=1.25).apply(x, SR)
    assert abs(y.shape[1] - SR / 1.25) < SR * 0.02
    assert abs(spectrum_peak_hz(y[:, SR // 8 : -SR // 8], SR) - 440.0) < 10.0


@pytest.mark.parametrize("engine", ["signalsmith", "rubberband"])
def test_pitch_and_stretch_fuse_into_one_pass(engine):
    x = sine(1.0, SR, 440.0)
    reg = get_registry()
    steps = [reg.get(n) for n in ("pitch_shift", "time_stretch")]
    params = [{"semitones": 12.0, "engine": engine}, {"rate": 1.25, "engine": engine}]
    chain = Chain([ChainStep(e.cls(), e.plugin, p) for e, p in zip(steps, params)])
    passes = []
    y = chain.apply(x, SR, on_step=lambda index, plugin, name: passes.append((index, plugin, name)))
    assert passes == [(0, "builtin.pitch+builtin.stretch", "pitch_shift+time_stretch")]
    assert abs(y.shape[1] - SR / 1.25) < SR * 0.02
    assert abs(spectrum_peak_hz(y[:, SR // 8 : -SR // 8], SR) - 880.0) < 15.0
    assert np.array_equal(y, chain.apply(x, SR))


def test_compress_reduces_dynamic_range_at_the_same_peak():
    x = concat(sine(0.5, SR, 200.0, amp=0.9), sine(0.5, SR, 200.0, amp=0.05))
    y = one("compress", threshold_db=-30.0, ratio=8.0, attack_ms=1.0, release_ms=50.0).apply(x, SR)
    crest_in = np.abs(x[:, :20000]).max() / np.abs(x[:, -20000:]).max()
    crest_out = np.abs(y[:, :20000]).max() / np.abs(y[:, -20000:]).max()
    assert crest_out < crest_in / 2
    assert np.isclose(np.abs(y).max(), np.abs(x).max(), rtol=1e-3)


def test_noise_hits_the_requested_snr_and_replays(voice):
    chain = one("noise", snr_db=20.0, color="white", seed=5)
    y = chain.apply(voice, SR)
    snr = 10 * np.log10(np.mean(voice.astype(np.float64) ** 2) / np.mean((y - voice).astype(np.float64) ** 2))
    assert abs(snr - 20.0) < 0.5
    assert np.array_equal(y, chain.apply(voice, SR))
    pink = one("noise", snr_db=20.0, color="pink", seed=5).apply(voice, SR) - voice
    spec = np.abs(np.fft.rfft(pink[0])) ** 2
    n = spec.size
    assert spec[n // 100 : n // 50].mean() > 5 * spec[n // 2 : n].mean()  # 1/f: more energy low


def test_noise_leaves_silence_silent():
    x = np.zeros((1, 1000), np.float32)
    assert np.array_equal(one("noise", snr_db=10.0, color="white", seed=1).apply(x, SR), x)


def test_eq_boosts_around_its_centre():
    x = noise(1.0, SR, seed=3)
    y = one("eq", freq_hz=2000.0, gain_db=12.0, q=1.0).apply(x, SR)
    f = np.fft.rfftfreq(x.shape[1], 1 / SR)
    band = (f > 1800) & (f < 2200)
    far = (f > 8000) & (f < 12000)
    gain_band = np.abs(np.fft.rfft(y[0]))[band].mean() / np.abs(np.fft.rfft(x[0]))[band].mean()
    gain_far = np.abs(np.fft.rfft(y[0]))[far].mean() / np.abs(np.fft.rfft(x[0]))[far].mean()
    assert gain_band > 3.0 and 0.8 < gain_far < 1.25


@pytest.mark.parametrize("name,cutoff,low_kept", [("lowpass", 1000.0, True), ("highpass", 1000.0, False)])
def test_filters(name, cutoff, low_kept):
    x = noise(1.0, SR, seed=4)
    y = one(name, cutoff_hz=cutoff).apply(x, SR)
    f = np.fft.rfftfreq(x.shape[1], 1 / SR)
    ratio = np.abs(np.fft.rfft(y[0])) / np.maximum(np.abs(np.fft.rfft(x[0])), 1e-9)
    low, high = ratio[(f > 100) & (f < 300)].mean(), ratio[(f > 8000) & (f < 12000)].mean()
    assert (low > 5 * high) if low_kept else (high > 5 * low)


def test_reverb_adds_a_tail_after_a_click():
    x = np.zeros((1, SR), np.float32)
    x[0, 100] = 0.5
    y = one("reverb", room_size=0.8, damping=0.3, wet_level=0.5, dry_level=1.0).apply(x, SR)
    assert y.shape == x.shape
    assert np.abs(y[0, SR // 10 : SR // 5]).max() > 1e-3  # energy long after the click


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_every_builtin_keeps_channels_and_sample_rate_contract(channels):
    x = concat(sine(0.3, SR, 220.0, channels=channels), noise(0.2, SR, channels=channels))
    rng = np.random.default_rng(0)
    for name, entry in get_registry().augmenters.items():
        aug = entry.cls()
        y = Chain([ChainStep(aug, entry.plugin, aug.sample(rng))]).apply(x, SR)
        assert y.shape[0] == channels and y.dtype == np.float32 and np.isfinite(y).all(), name


# --- chain: host-side validation ----------------------------------------------

class _Bad(Augmenter):
    name = "bad"
    params = (Param("mode", "raise", kind=str, choices=("raise", "shape", "channels", "nan", "list", "empty")),)

    def apply(self, audio, sr, mode="raise"):
        if mode == "raise":
            raise RuntimeError("boom\nsecond line")
        if mode == "shape":
            return audio[0]
        if mode == "channels":
            return np.concatenate([audio, audio])
        if mode == "nan":
            return audio * np.nan
        if mode == "empty":
            return audio[:, :0]
        return audio.tolist()


@pytest.mark.parametrize("mode,reason", [
    ("raise", "raised RuntimeError: boom"), ("shape", "expected [channels, n]"),
    ("channels", "changed the channel count from 2 to 4"), ("nan", "NaN or infinite"),
    ("list", "expected a numpy array"), ("empty", "empty audio"),
])
def test_misbehaving_augmenter_is_named(voice, mode, reason):
    chain = Chain([ChainStep(_Bad(mode=mode), "someplugin", {"mode": mode})])
    with pytest.raises(AugmentError) as e:
        chain.apply(voice, SR)
    assert str(e.value).startswith("augmenter 'bad' (plugin 'someplugin'): ")
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_chain_keeps_peak_below_full_scale():
    x = sine(0.2, SR, 440.0, amp=0.9)
    y = one("gain", db=12.0).apply(x, SR)
    assert 0.99 < np.abs(y).max() <= 0.999 + 1e-6


def test_chain_rejects_non_2d_input():
    with pytest.raises(ValueError, match=r"\[channels, n\]"):
        one("gain", db=1.0).apply(np.zeros(100, np.float32), SR)


# --- parameters, plans ----------------------------------------------------------

def test_params_validate_ranges_and_types():
    gain = get_registry().get("gain").cls
    with pytest.raises(ValueError, match="outside the allowed range"):
        gain(db=[-100.0, 0.0])
    with pytest.raises(ValueError, match="low > high"):
        gain(db=[3.0, -3.0])
    with pytest.raises(ValueError, match="expected a number"):
        gain(db="loud")
    with pytest.raises(ValueError, match="unknown parameter"):
        gain(decibels=3.0)
    noise_cls = get_registry().get("noise").cls
    with pytest.raises(ValueError, match="not one of"):
        noise_cls(color="brown")
    with pytest.raises(ValueError, match="expected an integer"):
        noise_cls(seed=1.5)


def test_sample_draws_inside_ranges_and_only_from_rng():
    aug = get_registry().get("eq").cls(freq_hz=[100.0, 200.0], gain_db=3.0)
    draws = [aug.sample(np.random.default_rng(i)) for i in range(200)]
    assert all(100.0 <= d["freq_hz"] <= 200.0 and d["gain_db"] == 3.0 for d in draws)
    np.random.seed(1)
    a = aug.sample(np.random.default_rng(42))
    np.random.seed(2)
    assert aug.sample(np.random.default_rng(42)) == a


def write_plan(tmp_path, text: str):
    p = tmp_path / "plan.toml"
    p.write_text(text)
    return p


def test_load_plan_refuses_unknown_names_listing_installed(tmp_path):
    p = write_plan(tmp_path, '[[steps]]\nname = "pitchshift"\n\n[[steps]]\nname = "gain"\n')
    with pytest.raises(ValueError) as e:
        load_plan(p)
    msg = str(e.value)
    assert str(p) in msg and "unknown augmenter 'pitchshift'" in msg
    assert "pitch_shift" in msg and "time_stretch" in msg


@pytest.mark.parametrize("body,needle", [
    ('[[steps]]\nname = "gain"\nprobability = 1.5\n', "probability must be a number in [0, 1]"),
    ('[[steps]]\nname = "gain"\nparams = { db = [-90.0, 0.0] }\n', "step 1 (gain): db: -90.0 is outside"),
    ('[[steps]]\nname = "gain"\nchance = 0.5\n', "unknown key(s) chance"),
    ('steps = 3\n', "'steps' must be a list"),
    ('[[steps]\nname = "gain"\n', "not valid TOML"),
    ('min_steps = -1\n', "min_steps must be"),
])
def test_load_plan_refuses_bad_files(tmp_path, body, needle):
    with pytest.raises(ValueError) as e:
        load_plan(write_plan(tmp_path, body))
    assert needle in str(e.value)


def test_load_plan_missing_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read plan"):
        load_plan(tmp_path / "nope.toml")


def test_default_plan_is_valid_and_never_empty():
    plan = default_plan()
    assert len(plan.steps) >= 4
    names = {s.name for s in plan.steps}
    assert {"pitch_shift", "time_stretch", "gain", "compress"} <= names
    for i in range(50):
        assert len(plan.sample(variant_rng(0, "x.wav", i))) >= 1


def test_plan_probability_is_respected():
    plan = parse_plan({"steps": [{"name": "gain", "probability": 0.25}, {"name": "polarity", "probability": 0.0}]})
    kept = [len(plan.sample(np.random.default_rng(i))) for i in range(2000)]
    assert 0.2 < np.mean(kept) < 0.3


def test_variant_rng_is_stable_and_distinct():
    a = variant_rng(7, "dir/take.wav", 3).random(4)
    assert np.array_equal(a, variant_rng(7, "dir/take.wav", 3).random(4))
    others = [variant_rng(8, "dir/take.wav", 3), variant_rng(7, "dir/take2.wav", 3), variant_rng(7, "dir/take.wav", 4)]
    assert all(not np.array_equal(a, g.random(4)) for g in others)


def test_record_round_trips_through_json_and_replays_bit_exact(voice):
    plan = parse_plan({"steps": [{"name": n} for n in ("pitch_shift", "time_stretch", "eq", "noise", "reverb")]})
    chain = plan.sample(variant_rng(1, "a.wav", 1))
    record = json.loads(json.dumps(chain.to_record()))
    assert [r["name"] for r in record] == ["pitch_shift", "time_stretch", "eq", "noise", "reverb"]
    assert all(r["plugin"].startswith("builtin.") for r in record)
    assert np.array_equal(Chain.from_record(record).apply(voice, SR), chain.apply(voice, SR))


def test_from_record_refuses_unknown_and_bad_params():
    with pytest.raises(ValueError, match="unknown augmenter 'warp'"):
        Chain.from_record([{"name": "warp", "plugin": "x", "params": {}}])
    with pytest.raises(ValueError, match="outside the allowed range"):
        Chain.from_record([{"name": "gain", "plugin": "builtin.gain", "params": {"db": 99.0}}])
    # Recorded from another plugin: never silently replayed with the built-in of the same name.
    with pytest.raises(ValueError, match="unknown augmenter 'gain' of plugin 'other'; installed: .*gain"):
        Chain.from_record([{"name": "gain", "plugin": "other", "params": {"db": 1.0}}])


def test_plan_and_chain_pickle_for_worker_processes(voice):
    plan = default_plan()
    clone = pickle.loads(pickle.dumps(plan))
    c1, c2 = plan.sample(variant_rng(3, "s", 1)), clone.sample(variant_rng(3, "s", 1))
    assert c1.to_record() == c2.to_record()
    assert np.array_equal(pickle.loads(pickle.dumps(c1)).apply(voice, SR), c1.apply(voice, SR))


@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (2, 2), (3, 2), (2, 7)])
def test_every_builtin_takes_tiny_inputs(shape):
    """prep augments long files in segments, so the last one can be a few samples long."""
    x = (0.1 * np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
    for name, entry in get_registry().augmenters.items():
        aug = entry.cls()
        y = Chain([ChainStep(aug, entry.plugin, aug.sample(np.random.default_rng(1)))]).apply(x, SR)
        assert y.shape[0] == shape[0], name
        if name not in ("time_stretch",):
            assert y.shape == shape, name


def test_a_failing_sample_is_an_augment_error_naming_the_plugin():
    class Sampler(Augmenter):
        name = "sampler"

        def sample(self, rng):
            raise KeyError("missing table")

        def apply(self, audio, sr):
            return audio

    with pytest.raises(AugmentError, match=r"augmenter 'sampler' \(plugin 'p'\): sample\(\) raised KeyError") as e:
        Plan([Step(Sampler(), "p", 1.0)]).sample(np.random.default_rng(0))
    assert "KeyError: 'missing table'" in e.value.traceback


def test_an_augment_error_carries_the_chain_the_failing_step_and_the_traceback(voice):
    chain = Chain([ChainStep(get_registry().get("gain").cls(), "builtin.gain", {"db": -1.0}),
                   ChainStep(_Bad(mode="raise"), "someplugin", {"mode": "raise"})])
    with pytest.raises(AugmentError) as e:
        chain.apply(voice, SR)
    err = pickle.loads(pickle.dumps(e.value))  # crosses process boundaries whole
    assert err.step == 1 and err.chain == chain.to_record() and "RuntimeError: boom" in err.traceback
    text = err.debug_text().splitlines()
    assert text[0] == str(e.value) and text[1] == "sampled chain:"
    assert text[2] == "  1. builtin.gain:gain(db=-1.0)"
    assert text[3] == "> 2. someplugin:bad(mode='raise')   <- failed here"
    assert text[4] == "Traceback (most recent call last):" and text[-2:] == ["RuntimeError: boom", "second line"]
