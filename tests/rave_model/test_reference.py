"""acids-rave configs and weights as ours (rave_model/reference.py), and the pieces of the
architecture that must compute the reference's functions (PQMF, noise filter, NoiseGeneratorV2).

Fixtures (tests/rave_model/fixtures/acids_rave, all produced by acids-rave 2.3.1):
``v1.gin`` ... ``noise.gin``: its shipped configs; ``*_operative.gin``: the config.gin
``rave train`` wrote in its run folders; ``*_state_keys.txt``: the state_dict keys and
shapes of ``rave.RAVE`` built from each config; ``noise_filter_and_pqmf.json``:
``rave.core.amp_to_impulse_response`` / ``fft_convolve`` on a fixed input and
``rave.pqmf.get_prototype(100, 16)``. No acids-rave is needed to run these tests.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from rave_model.config import load_config  # noqa: E402
from rave_model.decoder import NoiseGenerator, fft_convolve, impulse_response  # noqa: E402
from rave_model.discriminator import Discriminator  # noqa: E402
from rave_model.model import RAVE  # noqa: E402
from rave_model.reference import (  # noqa: E402
    config_from_gin,
    discriminator_state_from_reference,
    state_dict_from_reference,
)

FIX = Path(__file__).parent / "fixtures" / "acids_rave"


def gin(name: str) -> str:
    return (FIX / name).read_text()


def raw(*names: str):
    """A config as ``rave train --config a --config b`` combines shipped configs."""
    return config_from_gin("\n".join(gin(f"{n}.gin") for n in names), include_dirs=[FIX])


# -- gin configs -----------------------------------------------------------------------


def test_v1_gin_is_the_paper_model_with_effective_training_values():
    cfg = raw("v1")
    m, t = cfg.model, cfg.train
    assert (m.architecture, m.capacity, m.latent_size, m.ratios, m.n_bands) == ("v1", 64, 128, [4, 4, 4, 2], 16)
    assert (m.dilations, m.kernel_size, m.loud_stride, m.encoder_repeat) == ([[1, 1], [3, 1], [5, 1]], 3, 1, 1)
    assert (m.use_noise, m.noise_generator, m.noise_ratios, m.noise_bands) == (True, "v1", [4, 4, 4], 5)
    assert (m.weight_norm, m.causal, m.pqmf_attenuation) == (True, False, 100.0)
    assert cfg.data.sr == 44100 and cfg.data.n_signal == 131072
    assert t.loss_weights["feature_matching"] == 100.0  # 10, applied twice by the reference
    assert (t.disc_scales, t.disc_periods, t.disc_capacity, t.disc_layers) == (3, [], 64, 4)
    assert (t.beta_start, t.beta_end, t.vae_steps, t.disc_every) == (0.1, 0.1, 1_000_000, 2)
    assert (t.valid_signal_crop, t.fm_skip_features, t.fm_relative, t.gan_loss) == (False, 0, False, "hinge")
    assert t.stft_scales == [2048, 1024, 512, 256, 128]


def test_v2_and_v2_small_gin():
    v2 = raw("v2")
    assert (v2.model.architecture, v2.model.capacity, v2.model.use_noise, v2.model.amplitude_modulation) == ("v2", 96, False, True)
    assert v2.model.dilations == [[1, 3, 9], [1, 3, 9], [1, 3, 9], [1, 3]]
    t = v2.train
    assert (t.loss_weights["feature_matching"], t.disc_periods, t.disc_scales, t.disc_every) == (400.0, [2, 3, 5, 7, 11], 3, 4)
    assert (t.fm_skip_features, t.fm_relative, t.valid_signal_crop) == (1, True, True)
    assert (t.beta_start, t.beta_end, t.beta_warmup_steps) == (1e-6, 5e-2, 20000)
    small = raw("v2_small")
    m = small.model
    assert (m.capacity, m.ratios, m.use_noise, m.noise_generator, m.noise_hidden, m.noise_ratios, m.noise_bands) == (
        48, [4, 2, 2, 2], True, "v2", 64, [2, 2, 2], 32)
    assert (small.train.beta_start, small.train.beta_end, small.train.disc_every, small.train.disc_capacity) == (0.01, 0.01, 2, 48)


def test_presets_are_the_reference_models():
    for name in ("v1", "v2", "v2_small"):
        assert load_config(name).model == raw(name).model, name


def test_noise_and_causal_configs_combine():
    noisy = raw("v2", "noise")
    assert (noisy.model.noise_generator, noisy.model.noise_hidden, noisy.model.noise_bands) == ("v2", 128, 5)
    assert raw("v2_small", "causal").model.causal is True
    assert raw("v2_small").model.causal is False


@pytest.mark.parametrize("name", ["v1", "v2", "v2_small"])
def test_operative_config_of_a_run_maps_like_the_shipped_config(name):
    """``rave train`` writes every bound parameter under other module names (model.RAVE,
    convs.get_padding, scoped torch.nn.Conv1d ...): the same model comes out."""
    run = config_from_gin(gin(f"{name}_operative.gin"))
    assert run.model == raw(name).model
    t, r = run.train, raw(name).train
    for key in ("loss_weights", "disc_periods", "disc_scales", "disc_capacity", "disc_every", "fm_relative",
                "fm_skip_features", "valid_signal_crop", "beta_end", "stft_scales"):
        assert getattr(t, key) == getattr(r, key), key


@pytest.mark.parametrize(
    "extra, message",
    [
        ("blocks.EncoderV2.keep_dim = True", "keep_dim"),
        ("blocks.VariationalEncoder.encoder = @variational/blocks.Foo", "blocks.Foo"),
        ("rave.RAVE.encoder = @blocks.WasserteinEncoder", "VariationalEncoder"),
        ("rave.RAVE.input_mode = 'mel'", "input_mode"),
        ("NOISE_AUGMENTATION = 4", "noise_augmentation"),
        ("blocks.normalization.mode = 'spectral'", "normalization.mode"),
        ("periods/discriminator.ConvNet.kernel_size = (3, 1)", "kernel_size"),
        ("rave.RAVE.weights = {'feature_matching': 20, 'adversarial': 2}", "adversarial"),
        ("blocks.GeneratorV2.recurrent_layer = @blocks.GRU", "recurrent_layer"),
    ],
)
def test_unsupported_settings_are_refused_by_name(extra, message):
    with pytest.raises(ValueError, match=message):
        config_from_gin(gin("v2_small.gin") + "\n" + extra + "\n", include_dirs=[FIX])


def test_bad_gin_text_gives_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="include 'configs/v1.gin' not found"):
        config_from_gin(gin("v2.gin"), include_dirs=[tmp_path])
    with pytest.raises(ValueError, match="line 1: unterminated statement"):
        config_from_gin("rave.RAVE.latent_size = [1, 2\n")
    with pytest.raises(ValueError, match="gin:2: cannot parse the value"):
        config_from_gin("import rave\nrave.RAVE.latent_size = 12 +* 3\n")
    with pytest.raises(ValueError, match="undefined gin macro %CAPACITY_TYPO"):
        config_from_gin(gin("v2_small.gin") + "\nblocks.EncoderV2.capacity = %CAPACITY_TYPO\n", include_dirs=[FIX])


# -- weights ---------------------------------------------------------------------------


def reference_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with acids-rave's keys and shapes (from the fixture), random values."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for line in (FIX / f"{name}_state_keys.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        dims = [int(s) for s in shape.split(",")] if shape else []
        if dtype.startswith("float"):
            state[key] = torch.randn(dims, generator=g)
        else:
            state[key] = torch.zeros(dims, dtype=getattr(torch, dtype))
    return state


def _fingerprints(state: dict[str, torch.Tensor]) -> dict[bytes, str]:
    return {v.contiguous().numpy().tobytes(): k for k, v in state.items() if v.is_floating_point() and v.numel() > 1}


@pytest.mark.parametrize("name", ["v1", "v2", "v2_small"])
def test_every_reference_weight_lands_once_in_our_model(name):
    cfg = raw(name)
    ref = reference_state(name)
    ours = state_dict_from_reference(ref, cfg)
    model = RAVE(cfg)
    model.load_state_dict(ours, strict=True)
    by_value = _fingerprints(ref)
    used = [by_value.get(v.contiguous().numpy().tobytes()) for k, v in ours.items() if v.is_floating_point() and v.numel() > 1]
    assert None not in used
    assert len(used) == len(set(used))
    # Every weight of the reference's encoder and decoder is used; what is left is
    # derived buffers (PQMF kernels, STFT windows) and the discriminator.
    left = {k for k in by_value.values() if k not in set(used)}
    assert {k for k in left if not k.startswith(("discriminator.", "pqmf.", "audio_distance.", "multiband_audio_distance."))} == set()
    assert torch.equal(model.pqmf.hk, ref["pqmf.hk"])


def test_named_correspondences():
    """Hand-checked places: v1's ResidualStack, its synthesis branches, v2_small's separate
    waveform conv and noise module, v2's last net conv as the waveform head."""
    v1, v1_ref = raw("v1"), reference_state("v1")
    ours = state_dict_from_reference(v1_ref, v1)
    w = "parametrizations.weight.original1"
    # ours: net = [conv, (lrelu, upsample, 3 residual layers) x 4]; stage 1's second residual layer = net.9
    assert torch.equal(ours[f"decoder.net.9.net.branch.3.{w}"], v1_ref["decoder.net.4.net.branches.0.net.1.net.aligned.branches.0.3.weight_v"])
    assert torch.equal(ours[f"decoder.net.7.{w}"], v1_ref["decoder.net.3.net.1.weight_v"])
    assert torch.equal(ours[f"decoder.loud_gen.{w}"], v1_ref["decoder.synth.branches.1.weight_v"])
    assert torch.equal(ours["decoder.noise.net.4.weight"], v1_ref["decoder.synth.branches.2.net.4.weight"])
    assert torch.equal(ours["encoder.net.1.running_var"], v1_ref["encoder.encoder.net.1.running_var"])
    small, s_ref = raw("v2_small"), reference_state("v2_small")
    ours = state_dict_from_reference(s_ref, small)
    assert torch.equal(ours[f"decoder.wave_gen.{w}"], s_ref["decoder.waveform_module.weight_v"])
    assert torch.equal(ours["decoder.noise.net.2.weight"], s_ref["decoder.noise_module.net.2.weight"])
    v2, v2_ref = raw("v2"), reference_state("v2")
    ours = state_dict_from_reference(v2_ref, v2)
    assert torch.equal(ours[f"decoder.wave_gen.{w}"], v2_ref["decoder.net.21.weight_v"])


def test_folded_weights_of_an_export_are_split_again():
    """A .ts has plain ``weight`` tensors where the run had weight_g / weight_v."""
    cfg = raw("v2_small")
    ref = reference_state("v2_small")
    folded = {}
    for k, v in ref.items():
        if k.endswith("weight_g"):
            base = k[: -len("_g")]
            vv = ref[base + "_v"]
            folded[base] = v * vv / vv.flatten(1).norm(dim=1).view(-1, *([1] * (vv.dim() - 1)))
        elif not k.endswith("weight_v"):
            folded[k] = v
    model = RAVE(cfg)
    model.load_state_dict(state_dict_from_reference(folded, cfg))
    assert torch.allclose(model.encoder.net[0].weight, folded["encoder.encoder.net.0.weight"], atol=1e-6)
    assert torch.allclose(model.decoder.wave_gen.weight, folded["decoder.waveform_module.weight"], atol=1e-6)


def test_missing_reference_tensor_is_named():
    cfg = raw("v2_small")
    ref = reference_state("v2_small")
    del ref["decoder.noise_module.net.0.weight"]
    with pytest.raises(KeyError, match="decoder.noise_module.net.0"):
        state_dict_from_reference(ref, cfg)


@pytest.mark.parametrize("name", ["v1", "v2"])
def test_discriminator_weights_map(name):
    cfg = raw(name)
    ref = reference_state(name)
    disc = Discriminator.from_config(cfg)
    disc.load_state_dict(discriminator_state_from_reference(ref, cfg), strict=True)
    first = "discriminator.discriminators.0.layers.0.net.0.weight_v" if name == "v2" else "discriminator.layers.0.net.0.weight_v"
    assert torch.equal(disc.parts[0].stacks[0].convs[0].parametrizations.weight.original1, ref[first])
    if name == "v2":  # periods first, as CombineDiscriminators lists them
        assert disc.parts[0].stacks[0].convs[0].weight.dim() == 4


# -- functions that must be the reference's ---------------------------------------------


def test_pqmf_prototype_and_noise_filter_equal_the_reference():
    from rave_model.pqmf import prototype

    fx = json.loads((FIX / "noise_filter_and_pqmf.json").read_text())
    h = torch.tensor(prototype(100.0, 16))
    ref_h = torch.tensor(fx["pqmf_h_16"], dtype=torch.float64)
    assert h.shape == ref_h.shape and torch.allclose(h, ref_h, atol=1e-12)
    amp, noise = torch.tensor(fx["amp"]), torch.tensor(fx["noise"])
    ir = impulse_response(amp, 16)
    assert torch.allclose(ir, torch.tensor(fx["ir"]), atol=1e-6)
    assert torch.allclose(fft_convolve(noise, ir), torch.tensor(fx["out"]), atol=1e-6)


def test_fft_convolve_is_a_causal_truncated_convolution():
    g = torch.Generator().manual_seed(0)
    s, k = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
    direct = torch.stack([torch.stack([sum(s[b, m] * k[b, n - m] for m in range(n + 1)) for n in range(16)]) for b in range(3)])
    assert torch.allclose(fft_convolve(s, k), direct, atol=1e-5)


def test_noise_generator_v2_shapes_and_layers():
    gen = NoiseGenerator(48, 16, [2, 2, 2], 32, causal=False, version="v2", hidden=64)
    convs = [m for m in gen.net if isinstance(m, torch.nn.Conv1d)]
    assert [tuple(c.weight.shape) for c in convs] == [(64, 48, 4), (64, 64, 4), (512, 64, 4)]
    assert all(c.bias is None and not hasattr(c, "parametrizations") for c in convs)
    assert [(c.pad.total - c.pad.right, c.pad.right) for c in convs] == [(2, 0)] * 3  # padding (r, 0)
    x = torch.randn(2, 48, 64)
    assert gen(x).shape == (2, 16, 64)


def test_v2_noise_generator_streams_in_the_export():
    from rave_model.export import build_export

    cfg = load_config("tiny", ["model.architecture=v2", "model.dilations=[[1, 3], [1], [1]]", "model.amplitude_modulation=true",
                               "model.noise_generator=v2", "model.noise_hidden=8", "model.noise_ratios=[2, 2]", "model.noise_bands=4"])
    torch.manual_seed(0)
    model = RAVE(cfg).eval()
    x = torch.randn(1, 1, 2048 * 4) * 0.1
    with torch.no_grad():
        whole = build_export(model, fidelity=0.95, streaming=True).forward(x)
        again = build_export(model, fidelity=0.95, streaming=True)
        blocks = torch.cat([again.forward(x[..., i : i + 2048]) for i in range(0, x.shape[-1], 2048)], -1)
    peak = float(whole.abs().max())
    assert whole.shape == x.shape and peak > 0
    assert (whole - blocks).abs().max() <= 1e-4 * peak
