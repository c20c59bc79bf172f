"""TorchScript export for nn~ (Max/MSP, PureData) and plain ``torch.jit.load``.

The exported module needs nothing but torch. It follows nn~'s conventions (read from
acids-ircam/nn_tilde's backend): every method nn~ may call is listed by
``get_methods()`` and declared by a ``<method>_params`` buffer
``[in_channels, in_ratio, out_channels, out_ratio]``; ``get_attributes()`` lists the
settable attributes (none here); ``<method>_input_labels`` / ``_output_labels`` name the
inlets and outlets. Methods (``x`` audio ``[B, C, T]``, ``z`` latents ``[B, K, T / hop]``):

- ``encode(x) -> z``: the latent mean, projected on the PCA and cropped to the ``K``
  dimensions that reach the requested fidelity (deterministic: the same audio gives
  the same latents).
- ``decode(z) -> x``: the ``L - K`` missing dimensions are filled with standard normal
  noise (as acids-rave does), the PCA is undone, then the decoder runs. All noise (this
  fill and the decoder's noise branch) comes from a counter-based hash that streams, so
  the output does not depend on torch's global random state.
- ``forward(x) -> x``: ``decode(encode(x))``.
- ``prior(temperature) -> z`` when the run has a trained prior (stage 3).

With ``streaming=True`` (the default) every convolution is cached (see ``cached_conv``):
calling the methods on consecutive blocks (any multiple of the hop length) gives the
same result as one call on the whole signal. Without it (``streaming=False``, the
offline model) each call is processed as an isolated signal, so block-wise processing
(what nn~ does) clicks at block edges; it is meant for whole files.

Every tensor the module computes with is a parameter or a buffer (the kernels' prepared
weights and the streaming caches included), so ``module.to("cuda")`` (what nn~ does
when its gpu flag is on) or ``.to(torch.float64)`` moves all of it, and the file holds
each weight once, in the form the chosen kernels read.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from rave_model.cached_conv import FrameNoise, fold_batchnorm, prepare_mm, prepare_offline
from rave_model.model import RAVE


def latent_dims(fidelity: torch.Tensor, target: float) -> int:
    """Smallest number of PCA dimensions whose cumulative explained variance reaches ``target``."""
    above = torch.nonzero(fidelity >= target - 1e-6)
    return int(above[0, 0]) + 1 if len(above) else int(fidelity.shape[0])


class ExportedRAVE(nn.Module):
    """The scripted model. Build it with :func:`build_export` (not directly)."""

    def __init__(self, model: RAVE, latent_size: int, streaming: bool, prior: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.pqmf = model.pqmf
        self.encoder = model.encoder
        self.decoder = model.decoder
        self.sr = int(model.sampling_rate)
        self.n_channels = int(model.n_channels)
        self.hop_length = int(model.hop_length)
        self.full_latent_size = int(model.latent_size)
        self.latent_size = int(latent_size)
        self.streaming = bool(streaming)
        self.register_buffer("sampling_rate", torch.tensor([self.sr]))
        self.register_buffer("latent_pca", model.latent_pca.detach().clone())
        self.register_buffer("latent_mean", model.latent_mean.detach().clone())
        self.register_buffer("fidelity", model.fidelity.detach().clone())
        c, k, hop = self.n_channels, self.latent_size, self.hop_length
        audio = [f"(signal) channel {i + 1}" for i in range(c)]
        latent = [f"(signal) latent {i + 1}" for i in range(k)]
        self.methods = ["encode", "decode", "forward"]
        self._declare("encode", [c, 1, k, hop], audio, latent)
        self._declare("decode", [k, hop, c, 1], latent, audio)
        self._declare("forward", [c, 1, c, 1], audio, audio)
        # Fill noise for the cropped dimensions, drawn per frame so blocks equal whole.
        self.fill_noise = FrameNoise(seed=0xF111)
        self.fill_noise.streaming = streaming
        self.has_prior = prior is not None
        self.prior_module = prior if prior is not None else _NoPrior()
        if prior is not None:
            self.methods.append("prior")
            self._declare("prior", [1, hop, k, hop], ["(signal) temperature"], latent)
        self.attributes = torch.jit.Attribute([], List[str])

    def _declare(self, name: str, params: list[int], inputs: list[str], outputs: list[str]) -> None:
        self.register_buffer(f"{name}_params", torch.tensor(params))
        setattr(self, f"{name}_input_labels", inputs)
        setattr(self, f"{name}_output_labels", outputs)

    @torch.jit.export
    def get_methods(self) -> List[str]:
        return self.methods

    @torch.jit.export
    def get_attributes(self) -> List[str]:
        return self.attributes

    @torch.jit.export
    def get_sampling_rate(self) -> int:
        return self.sr

    def _check_length(self, t: int, ratio: int) -> None:
        if self.streaming and t % ratio != 0:
            raise ValueError("streaming RAVE: the buffer length must be a multiple of the hop length")

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, K, T / hop]`` (``T`` padded up to the hop when not streaming)."""
        self._check_length(x.shape[-1], self.hop_length)
        rest = x.shape[-1] % self.hop_length
        if rest != 0:
            x = F.pad(x, (0, self.hop_length - rest))
        params = self.encoder(self.pqmf(x))
        mean = params[:, : self.full_latent_size]
        z = F.conv1d(mean - self.latent_mean.unsqueeze(-1), self.latent_pca.unsqueeze(-1))
        return z[:, : self.latent_size]

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, K, T'] -> [B, C, T' * hop]``; extra input dimensions are ignored."""
        b, t = z.shape[0], z.shape[-1]
        z = z[:, : self.latent_size]
        missing = self.full_latent_size - z.shape[1]
        if missing > 0:
            z = torch.cat([z, self.fill_noise.normal(b, t, missing, z.device).to(z.dtype).transpose(1, 2)], 1)
        z = F.conv1d(z, self.latent_pca.t().unsqueeze(-1)) + self.latent_mean.unsqueeze(-1)
        return self.pqmf.inverse(self.decoder(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[-1]
        return self.decode(self.encode(x))[..., :t]

    @torch.jit.export
    def prior(self, temperature: torch.Tensor) -> torch.Tensor:
        """``[B, 1, T'] -> [B, K, T']`` latents from the prior (zeros without one)."""
        z = self.prior_module.prior(temperature)
        if z.shape[1] >= self.latent_size:
            return z[:, : self.latent_size]
        return F.pad(z, (0, 0, 0, self.latent_size - z.shape[1]))


class _NoPrior(nn.Module):
    def prior(self, temperature: torch.Tensor) -> torch.Tensor:
        return torch.zeros(temperature.shape[0], 1, temperature.shape[-1], dtype=temperature.dtype)


def build_export(
    model: RAVE, fidelity: float = 0.95, streaming: bool = True, prior: Optional[nn.Module] = None
) -> torch.jit.ScriptModule:
    """Script ``model`` (left untouched: a deep copy is exported) for nn~.

    Args:
        model: a trained RAVE (its PCA buffers decide the latent crop).
        fidelity: fraction of latent variance to keep, in (0, 1]; 1 keeps every dimension.
        streaming: cached convolutions (block processing equals whole processing; what
            nn~ needs); ``False``: the offline model, for whole signals.
        prior: an optional scriptable prior with a ``prior(temperature)`` method.
    """
    import copy

    if not 0.0 < fidelity <= 1.0:
        raise ValueError(f"fidelity must be in (0, 1], got {fidelity}")
    model = model.folded().cpu().eval()
    for m in model.modules():
        if hasattr(m, "deterministic"):
            m.deterministic = True
    fold_batchnorm(model)
    if streaming:
        # Streaming calls see short blocks, where BLAS matmuls are several times faster
        # than oneDNN convolutions; long offline signals are faster with oneDNN.
        prepare_mm(model)
    else:
        prepare_offline(model)
    model.set_streaming(streaming)  # after the noise switch: it also arms FrameNoise
    for p in model.parameters():
        p.requires_grad_(False)
    k = latent_dims(model.fidelity, fidelity)
    if prior is not None:
        prior = copy.deepcopy(prior).cpu().eval()
    module = ExportedRAVE(model, k, streaming, prior)
    with warnings.catch_warnings():
        # torch.jit.script is deprecated in favour of torch.export, which nn~ cannot load.
        warnings.filterwarnings("ignore", category=FutureWarning)
        return torch.jit.script(module)


def default_output(run: Path, streaming: bool) -> Path:
    """``RUN/<run name>.ts`` for a streaming export, ``RUN/<run name>_offline.ts`` otherwise
    (``RUN``: the run folder, or the folder of a checkpoint given directly)."""
    run_dir = run
    if run.is_file():
        # RUN/checkpoints/last.ckpt -> RUN; any other checkpoint file -> its folder.
        run_dir = run.parent.parent if run.parent.name == "checkpoints" else run.parent
    return run_dir / f"{run_dir.resolve().name}{'' if streaming else '_offline'}.ts"


def export_run(
    run: Path | str, output: Path | str | None = None, fidelity: float = 0.95, streaming: bool = True, which: str = "last"
) -> tuple[Path, dict[str, Any]]:
    """Export the model of a run folder (or checkpoint file) to ``output`` (default:
    :func:`default_output`); streaming (for nn~) unless ``streaming=False``.

    The file is written to a temporary name and renamed, so a failed export never leaves
    a half-written model. Returns the path and a summary (latent dims, sampling rate, ...).
    """
    from rave_model.train.checkpoint import load_model

    model, _cfg, ckpt = load_model(run, which=which)
    prior = None
    try:
        from rave_model.prior import load_prior

        prior = load_prior(ckpt)
    except ImportError:
        prior = None
    scripted = build_export(model, fidelity=fidelity, streaming=streaming, prior=prior)
    output = default_output(Path(run), streaming) if output is None else Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    try:
        scripted.save(str(tmp))
        tmp.replace(output)
    finally:
        if tmp.exists():
            tmp.unlink()
    info = {
        "path": str(output),
        "sampling_rate": int(model.sampling_rate),
        "channels": int(model.n_channels),
        "hop_length": int(model.hop_length),
        "latent_dims": int(scripted.latent_size),
        "full_latent_size": int(model.latent_size),
        "streaming": streaming,
        "prior": prior is not None,
        "stage": ckpt.stage,
        "step": ckpt.step,
    }
    return output, info
