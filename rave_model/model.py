"""RAVE: PQMF -> encoder -> variational latent -> decoder -> inverse PQMF.

Shapes (``hop = n_bands * prod(ratios)``)::

    x       [B, C, T]                 audio, T a multiple of hop (encode pads otherwise)
    bands   [B, C * n_bands, T / n_bands]     model.multiband(x)
    params  [B, 2 * latent, T / hop]  model.encode(x): mean and pre-softplus scale
    z       [B, latent, T / hop]      model.reparametrize(params)[0]
    y       [B, C, T]                 model.decode(z)

The latent PCA learnt after stage 1 lives in three buffers so it travels with the
weights and the export can crop the latent: ``latent_pca [L, L]`` (rows are the
principal directions), ``latent_mean [L]`` and ``fidelity [L]`` (cumulative explained
variance ratio of the first k+1 components). Before the PCA is computed they hold the
identity, zeros and a uniform ramp.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rave_model.cached_conv import reset_streaming, set_streaming
from rave_model.config import Config
from rave_model.decoder import build_decoder
from rave_model.encoder import build_encoder
from rave_model.pqmf import PQMF


class RAVE(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        m = cfg.model
        self.sampling_rate = cfg.data.sr
        self.n_channels = cfg.data.channels
        self.latent_size = m.latent_size
        self.n_bands = m.n_bands
        self.hop_length = cfg.hop_length
        self.pqmf = PQMF(m.n_bands, m.pqmf_attenuation, causal=m.causal)
        data_size = m.n_bands * cfg.data.channels
        self.encoder = build_encoder(m, data_size)
        self.decoder = build_decoder(m, data_size)
        L = m.latent_size
        self.register_buffer("latent_pca", torch.eye(L))
        self.register_buffer("latent_mean", torch.zeros(L))
        self.register_buffer("fidelity", torch.arange(1, L + 1, dtype=torch.float32) / L)

    # -- analysis / synthesis ------------------------------------------------------

    def multiband(self, x: torch.Tensor) -> torch.Tensor:
        """PQMF analysis ``[B, C, T] -> [B, C * n_bands, T / n_bands]`` (for multiband losses)."""
        return self.pqmf(x)

    def multiband_inverse(self, bands: torch.Tensor) -> torch.Tensor:
        """PQMF synthesis ``[B, C * n_bands, T'] -> [B, C, T' * n_bands]``."""
        return self.pqmf.inverse(bands)

    def pad_to_hop(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``[B, C, T]`` on the right to a multiple of the hop length."""
        rest = x.shape[-1] % self.hop_length
        return F.pad(x, (0, self.hop_length - rest)) if rest else x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, 2 * latent, ceil(T / hop)]`` latent parameters (mean, scale)."""
        return self.encoder(self.pqmf(self.pad_to_hop(x)))

    def reparametrize(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``z [B, latent, T']`` and return it with the KL divergence to N(0, I)
        (a scalar: summed over latent dimensions, averaged over batch and frames)."""
        mean, scale = params.chunk(2, 1)
        std = F.softplus(scale) + 1e-4
        var = std * std
        z = mean + std * torch.randn_like(mean)
        kl = (mean * mean + var - torch.log(var) - 1).sum(1).mean()
        return z, kl

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, latent, T'] -> [B, C, T' * hop]``."""
        return self.pqmf.inverse(self.decoder(z))

    def decode_multiband(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output before synthesis: ``[B, C * n_bands, T' * prod(ratios)]``."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction through the latent mean: ``[B, C, T] -> [B, C, T]``
        (``T`` rounded up to the hop length)."""
        mean, _ = self.encode(x).chunk(2, 1)
        return self.decode(mean)

    # -- stage switches ------------------------------------------------------------

    def set_warmed_up(self, warmed_up: bool) -> None:
        """Stage 2 on: the v1 decoder adds its noise branch from then on (acids-rave)."""
        self.decoder.warmed_up.fill_(bool(warmed_up))

    def set_streaming(self, streaming: bool) -> None:
        """Cached causal processing (see ``cached_conv``); clears the caches."""
        set_streaming(self, streaming)

    def reset_streaming(self) -> None:
        reset_streaming(self)

    def folded(self) -> RAVE:
        """A copy with weight normalisation folded into plain weights (for export).

        Built fresh rather than with ``copy.deepcopy`` + ``remove_parametrizations``:
        parametrized modules share one generated class with their deep copies, and
        removing the parametrization from the copy deletes the property from that shared
        class, breaking the original.
        """
        cfg = Config.from_dict(self.cfg.to_dict())
        cfg.model.weight_norm = False
        plain = RAVE(cfg).to(self.latent_pca.device)
        source = dict(self.named_modules())
        with torch.no_grad():
            for name, target in plain.named_modules():
                src = source[name]
                for pname, param in target.named_parameters(recurse=False):
                    param.copy_(getattr(src, pname))
                for bname, buf in target.named_buffers(recurse=False):
                    if buf is not None and buf.numel() == getattr(src, bname).numel():
                        buf.copy_(getattr(src, bname))
        return plain.train(self.training)

    def for_inference(self) -> RAVE:
        """A folded eval-mode copy on the offline inference kernels (BatchNorm folded,
        Winograd and per-tap BLAS convolutions; ``cached_conv.prepare_offline``): the
        same outputs up to float rounding, faster on a CPU (docs/listening.md gives the
        figures), whole signals only (no streaming, no training)."""
        from rave_model.cached_conv import fold_batchnorm, prepare_offline

        fast = self.folded().eval()
        fold_batchnorm(fast)
        prepare_offline(fast)
        for p in fast.parameters():
            p.requires_grad_(False)
        return fast


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable parameter counts: ``{"encoder", "decoder", "total"}``."""

    def n(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters() if p.requires_grad)

    return {"encoder": n(model.encoder), "decoder": n(model.decoder), "total": n(model)}

