"""Config, presets, PQMF, cached convolutions and the RAVE model (rave_model/{config,pqmf,cached_conv,model}.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rave_model.cached_conv import (  # noqa: E402
    Conv1d,
    ConvTranspose1d,
    conv1d_taps,
    fold_batchnorm,
    prepare_mm,
    prepare_offline,
    set_streaming,
)
from rave_model.config import PRESETS, Config, apply_overrides, load_config, valid_keys  # noqa: E402
from rave_model.model import RAVE, count_parameters  # noqa: E402
from rave_model.pqmf import PQMF  # noqa: E402
from tests.audio import clicks, concat, noise, sine  # noqa: E402


def music(seconds: float, sr: int, channels: int = 1) -> torch.Tensor:
    """[1, channels, n]: a sine, noise and clicks, so every band has energy."""
    x = concat(sine(seconds / 3, sr, 220, channels=channels), noise(seconds / 3, sr, 0.3, channels), clicks(seconds / 3, sr, 0.05, channels=channels))
    return torch.from_numpy(x).unsqueeze(0)


def snr_db(ref: torch.Tensor, est: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).mean() / (ref - est).pow(2).mean()))


# -- config -------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_loads_and_round_trips(preset):
    cfg = load_config(preset)
    assert cfg.hop_length == cfg.model.n_bands * int(np.prod(cfg.model.ratios))
    assert cfg.data.n_signal % cfg.hop_length == 0
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_v1_preset_is_the_paper():
    cfg = load_config("v1")
    assert (cfg.data.sr, cfg.model.capacity, cfg.model.latent_size, cfg.model.ratios, cfg.model.n_bands) == (48000, 64, 128, [4, 4, 4, 2], 16)
    assert cfg.train.batch_size == 8 and cfg.train.vae_steps == 1_000_000
    assert cfg.train.vae_steps + cfg.train.adversarial_steps == 3_000_000
    assert cfg.hop_length == 2048


def test_overrides_are_parsed_and_coerced():
    cfg = load_config("tiny", ["train.batch_size=2", "model.ratios=[2, 2]", "train.lr=3e-4", "model.causal=false", "model.architecture=v2", "model.dilations=[[1], [1, 3]]"])
    assert cfg.train.batch_size == 2 and cfg.model.ratios == [2, 2] and cfg.train.lr == 3e-4
    assert cfg.model.causal is False and cfg.model.architecture == "v2" and cfg.model.dilations == [[1], [1, 3]]
    nested = load_config("tiny", {"train": {"batch_size": 3}, "model.latent_size": 4})
    assert nested.train.batch_size == 3 and nested.model.latent_size == 4
    assert load_config("tiny", {"train.lr": 1}).train.lr == 1.0  # int accepted for a float


def test_unknown_key_is_refused_with_the_closest_valid_one():
    with pytest.raises(ValueError, match="unknown key 'train.batchsize'; did you mean 'train.batch_size'"):
        load_config("tiny", ["train.batchsize=4"])
    with pytest.raises(ValueError, match="unknown key 'train.zzzzzz'; valid keys: train.batch_size, "):
        load_config("tiny", ["train.zzzzzz=4"])
    with pytest.raises(ValueError, match="unknown key"):
        Config.from_dict({"model": {"capacty": 3}})
    assert "model.capacity" in valid_keys() and "train.loss_weights.feature_matching" in valid_keys()


def test_apply_overrides_returns_a_new_config():
    base = load_config("v2")
    cfg = apply_overrides(base, ["train.lr=1e-4", "train.loss_weights.adversarial=2", "train.gan_loss=lsgan"])
    assert (cfg.train.lr, cfg.train.gan_loss) == (1e-4, "lsgan")
    assert cfg.train.loss_weights == {"multiband": 1.0, "fullband": 1.0, "adversarial": 2.0, "feature_matching": 400.0}
    assert base.train.lr == 1e-3 and base.train.loss_weights["adversarial"] == 1.0  # the base is left as it was
    # From a stored dictionary, and a whole table as a TOML inline table (entries it names change).
    again = apply_overrides(cfg.to_dict(), ["train.loss_weights={feature_matching = 10}"])
    assert again.train.loss_weights == {**cfg.train.loss_weights, "feature_matching": 10.0}
    assert apply_overrides(cfg, []) == cfg
    with pytest.raises(ValueError, match="train.loss_weights.adversarial must be a number"):
        apply_overrides(base, ["train.loss_weights.adversarial=high"])


def test_the_feature_matching_weight_key():
    # A preset or an override naming the key of the earlier layout is told the new one.
    with pytest.raises(ValueError, match="unknown key 'train.feature_matching': set train.loss_weights.feature_matching instead"):
        load_config("v2", ["train.feature_matching=400"])
    # A stored config (an older run's checkpoint) is read with the value in its new place.
    stored = load_config("v2").to_dict()
    del stored["train"]["loss_weights"]
    stored["train"]["feature_matching"] = 25.0
    assert Config.from_dict(stored).train.loss_weights["feature_matching"] == 25.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=two", "integer"),
        ("train.batch_size=2.5", "integer"),
        ("model.causal=maybe", "true or false"),
        ("model.ratios=4", "list"),
        ("model.n_bands=12", "power of two"),
        ("model.ratios=[3, 4]", "1 or even"),
        ("data.n_signal=1000", "multiple of the hop"),
        ("model.architecture=v9", "architecture"),
        ("nonsense", "section.key=value"),
    ],
)
def test_bad_values_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("tiny", [override])


def test_preset_from_a_file_and_bad_files(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[model]\narchitecture = "v2"\ncapacity = 4\nlatent_size = 4\nratios = [2]\nn_bands = 2\ndilations = [[1]]\nuse_noise = false\n[data]\nn_signal = 256\n')
    cfg = load_config(path)
    assert cfg.model.capacity == 4 and cfg.model.architecture == "v2" and cfg.train.batch_size == 8  # default kept
    (tmp_path / "bad.toml").write_text("[model\n")
    with pytest.raises(ValueError, match="bad.toml: invalid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("v7")


# -- model --------------------------------------------------------------------------


def test_v1_parameter_count_is_near_the_paper():
    counts = count_parameters(RAVE(load_config("v1")))
    print(f"v1 parameters: encoder {counts['encoder']:,}, decoder {counts['decoder']:,}, total {counts['total']:,}")
    assert abs(counts["total"] - 17.6e6) / 17.6e6 < 0.02
    assert counts["total"] == counts["encoder"] + counts["decoder"]


@pytest.mark.parametrize(
    "overrides",
    [[], ["data.channels=2"], ["model.architecture=v2", "model.dilations=[[1, 3], [1], [1]]", "model.amplitude_modulation=true"], ["model.causal=false", "model.use_noise=false"]],
    ids=["tiny", "stereo", "v2", "noncausal"],
)
def test_shapes_through_the_model(overrides):
    cfg = load_config("tiny", overrides)
    model = RAVE(cfg)
    c, hop, latent = cfg.data.channels, cfg.hop_length, cfg.model.latent_size
    x = music(0.3, cfg.data.sr, c)[..., : 40 * hop].repeat(2, 1, 1)  # [2, C, 40 hops]
    assert model.multiband(x).shape == (2, c * cfg.model.n_bands, x.shape[-1] // cfg.model.n_bands)
    params = model.encode(x)
    assert params.shape == (2, 2 * latent, 40)
    z, kl = model.reparametrize(params)
    assert z.shape == (2, latent, 40) and kl.ndim == 0 and kl.item() >= 0
    y = model.decode(z)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # Gradients reach both ends (what stage 1 trains).
    (y.pow(2).mean() + kl).backward()
    first = next(model.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    # Lengths that are not a multiple of the hop are padded up by encode.
    assert model.encode(x[..., : 40 * hop - 5]).shape[-1] == 40
    assert model.eval()(x).shape == x.shape


def test_pqmf_reconstructs_and_splits_frequencies():
    sr = 48000
    for n_bands in (4, 16):
        pqmf = PQMF(n_bands, 100.0)
        x = torch.from_numpy(noise(0.5, sr, 0.3)).unsqueeze(0)[..., : n_bands * 1024]
        y = pqmf.inverse(pqmf(x))
        # As acids-rave's CachedPQMF: the round trip delays the signal by n_bands samples.
        assert snr_db(x[..., 500:-500], y[..., 500 + n_bands : -500 + n_bands]) > 50
        assert snr_db(x[..., 500:-500], y[..., 500:-500]) < 10
    # A 1 kHz sine (band 0 of 16 covers 0-1.5 kHz) lands almost entirely in band 0.
    pqmf = PQMF(16, 100.0)
    bands = pqmf(torch.from_numpy(sine(0.5, sr, 1000.0)).unsqueeze(0)[..., : 16 * 1024])
    energy = bands[..., 100:-100].pow(2).mean(-1)[0]
    assert energy[0] / energy.sum() > 0.99


def test_folded_copy_matches_and_leaves_the_original_working():
    torch.manual_seed(0)
    model = RAVE(load_config("tiny")).eval()
    x = music(0.3, 16000)[..., :2048]
    with torch.no_grad():
        before = model(x)
        plain = model.folded().eval()
        again = model(x)  # the original still has its weight norm
        assert torch.allclose(plain(x), before, atol=1e-6)
    assert torch.equal(before, again)
    assert not any("parametrizations" in k for k in plain.state_dict())
    assert any("parametrizations" in k for k in model.state_dict())


@pytest.mark.parametrize("causal", [True, False])
def test_streaming_blocks_equal_whole_signal(causal):
    torch.manual_seed(0)
    model = RAVE(load_config("tiny", [f"model.causal={str(causal).lower()}"])).eval()
    model.set_warmed_up(True)  # noise branch on: seeded draws must line up too
    x = music(0.6, 16000)[..., : 8192]
    with torch.no_grad():
        offline = model(x)
        model.set_streaming(True)
        torch.manual_seed(1)
        whole = model(x)
        model.reset_streaming()
        torch.manual_seed(1)
        blocks = torch.cat([model(x[..., i : i + 2048]) for i in range(0, 8192, 2048)], -1)
    assert (blocks - whole).abs().max() < 1e-5 * max(1.0, float(whole.abs().max()))
    if causal:
        # Trained causal: streaming is the offline model itself (no added latency).
        torch.manual_seed(1)
        model.set_streaming(False)
        with torch.no_grad():
            assert torch.allclose(model(x), whole, atol=1e-6)
    else:
        assert not torch.allclose(offline, whole, atol=1e-6)


def test_noise_branch_only_after_warm_up():
    model = RAVE(load_config("tiny")).eval()
    z = torch.randn(1, 8, 16)
    with torch.no_grad():
        assert torch.equal(model.decode(z), model.decode(z))
        model.set_warmed_up(True)
        assert not torch.equal(model.decode(z), model.decode(z))


def test_matmul_kernels_match_torch_convolutions():
    torch.manual_seed(0)
    for conv in (Conv1d(6, 5, 3, dilation=3), Conv1d(6, 4, 5, stride=2, groups=2), Conv1d(6, 5, 3, stride=4), ConvTranspose1d(6, 5, 8, 4)):
        x = torch.randn(3, 6, 32)
        with torch.no_grad():
            ref = conv(x)
            prepare_mm(conv)
            assert conv.use_mm
            assert torch.allclose(conv(x), ref, atol=1e-5), conv
            assert torch.allclose(conv(x[:1]), ref[:1], atol=1e-5)
            set_streaming(conv, True)
            whole = conv(x)
            set_streaming(conv, True)  # fresh caches
            parts = torch.cat([conv(x[..., i : i + 8]) for i in range(0, 32, 8)], -1)
        assert torch.allclose(parts, whole, atol=1e-5), conv


@pytest.mark.parametrize("causal", [False, True])
def test_offline_kernels_match_torch_convolutions(causal):
    torch.manual_seed(0)
    convs = (
        Conv1d(6, 5, 3, causal=causal),
        Conv1d(6, 5, 3, dilation=5, causal=causal, bias=True),
        Conv1d(6, 5, 7, causal=causal),
        Conv1d(6, 5, 1, causal=causal),
        Conv1d(6, 5, 9, stride=4, causal=causal),
        Conv1d(6, 5, 3, stride=2, causal=causal),
        Conv1d(6, 4, 5, stride=2, groups=2, causal=causal),  # stays on oneDNN
        ConvTranspose1d(6, 5, 8, 4, causal=causal),
        ConvTranspose1d(6, 5, 4, 2, bias=True, causal=causal),
    )
    for conv in convs:
        with torch.no_grad():
            xs = [torch.randn(b, 6, t) for b, t in ((3, 32), (1, 32), (1, 4))]  # t=4 < dilation span
            refs = [conv(x) for x in xs]
            prepare_offline(conv)
            # Every dense conv and every transposed conv switches kernels.
            assert getattr(conv, "use_taps", False) or getattr(conv, "use_poly", False) or conv.groups > 1, conv
            for x, ref in zip(xs, refs):
                assert torch.allclose(conv(x), ref, atol=1e-5), (conv, x.shape)


@pytest.mark.parametrize("left, dilation", [(1, 1), (6, 3), (0, 2), (4, 2)])
def test_conv1d_taps_in_blocks_equals_one_pass(left, dilation):
    torch.manual_seed(0)
    x, wt = torch.randn(1, 6, 29), torch.randn(3, 6, 5)
    ref = torch.nn.functional.conv1d(
        torch.nn.functional.pad(x, (left, 2 * dilation - left)), wt.permute(2, 1, 0), dilation=dilation
    )
    for block in (1, 5, 29, 2048):  # blocks shorter than the dilation, ragged, exact, one
        assert torch.allclose(conv1d_taps(x, wt, left, dilation, block=block), ref, atol=1e-5), block
    # More output frames than input frames (the polyphase transposed convolution's case).
    longer = torch.nn.functional.conv1d(
        torch.nn.functional.pad(x, (left, 2 * dilation - left + 4)), wt.permute(2, 1, 0), dilation=dilation
    )
    for block in (5, 2048):
        assert torch.allclose(conv1d_taps(x, wt, left, dilation, block=block, length=33), longer, atol=1e-5)
    # Strided (T = 28, a multiple of the stride, as the encoder sees it).
    strided = torch.nn.functional.conv1d(
        torch.nn.functional.pad(x[..., :28], (left, 2 * dilation - left)), wt.permute(2, 1, 0), stride=4, dilation=dilation
    )
    for block in (1, 3, 2048):
        assert torch.allclose(conv1d_taps(x[..., :28], wt, left, dilation, stride=4, block=block), strided, atol=1e-5)


def test_offline_kernels_keep_the_model_output():
    torch.manual_seed(0)
    model = RAVE(load_config("v1", ["model.capacity=8", "model.latent_size=4"])).eval()
    fast = model.folded().eval()
    prepare_offline(fast)
    x = music(0.3, 44100)[..., : 4 * 2048]
    with torch.no_grad():
        ref = model(x)
        assert (fast(x) - ref).abs().max() < 1e-5 * float(ref.abs().max())


def test_batchnorm_folds_into_the_preceding_convolution():
    torch.manual_seed(0)
    model = RAVE(load_config("v1", ["model.capacity=8", "model.latent_size=4"]))
    norms = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms
    for norm in norms:  # trained-looking statistics, not the identity of a fresh layer
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    fast = model.folded().eval()
    fold_batchnorm(fast)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in fast.modules())
    x = music(0.3, 44100)[..., : 4 * 2048]
    with torch.no_grad():
        ref = model.encoder(model.pqmf(x))
        assert (fast.encoder(fast.pqmf(x)) - ref).abs().max() < 1e-5 * float(ref.abs().max())
        set_streaming(fast, True)
        parts = torch.cat([fast.encoder(fast.pqmf(x[..., i : i + 2048])) for i in range(0, x.shape[-1], 2048)], -1)
        set_streaming(fast, False)
        set_streaming(model, True)
        whole = torch.cat([model.encoder(model.pqmf(x[..., i : i + 2048])) for i in range(0, x.shape[-1], 2048)], -1)
    assert (parts - whole).abs().max() < 1e-5 * float(whole.abs().max())


def test_load_model_from_checkpoint(tmp_path: Path):
    from rave_model.train.checkpoint import load_model

    cfg = load_config("tiny")
    model = RAVE(cfg)
    model.latent_mean.fill_(0.5)
    ckpt = {"format": 1, "config": cfg.to_dict(), "stage": "vae", "step": 3, "model": model.state_dict()}
    (tmp_path / "checkpoints").mkdir()
    torch.save(ckpt, tmp_path / "checkpoints" / "last.ckpt")
    loaded, loaded_cfg, info = load_model(tmp_path)
    assert info.step == 3 and not loaded.training and loaded_cfg == cfg
    assert torch.equal(loaded.latent_mean, model.latent_mean)
    with pytest.raises(FileNotFoundError, match="no last.ckpt"):
        load_model(tmp_path / "elsewhere")
