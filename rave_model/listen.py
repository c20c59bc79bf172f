"""Listening tools: encode audio to latents, decode latents to audio, reconstruct.

Every tool works on either form of a trained model, through one interface
(:class:`Listener`):

- a **run folder or checkpoint file** (``runs/NAME``, ``.../last.ckpt``): the
  RAVE model is rebuilt from the checkpoint;
- an **exported TorchScript file** (``model.ts`` from ``ravemodel export``):
  only its nn~ methods (``encode``, ``decode``) are used, so it works for any
  file that follows nn~'s conventions.

Latents are always in the model's PCA space (as nn~'s ``encode`` gives them):
``z_pca = latent_pca @ (z - latent_mean)``, dimension 0 explaining the most
variance. A checkpoint gives all ``latent_size`` dimensions; an exported file
gives the dimensions its ``--fidelity`` kept. ``decode`` takes any number of
dimensions: missing ones are filled with standard normal noise, as the
reference does (the unused dimensions of a VAE latent follow the N(0, 1)
prior), extra ones are dropped.

Encoding is deterministic for a checkpoint (the posterior mean); an exported
file's ``encode`` is whatever the export made it (the reference samples).

Files: latents are ``.npy`` arrays [latent, frames] (float32) for one item,
audio is written as 32-bit float wav at the model's rate.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from rave_model.prior import LatentPrior
    from rave_model.train.checkpoint import Checkpoint


class ListenError(ValueError):
    """A model, audio or latent file the tools cannot use; ``str()`` names it."""


@dataclass
class Listener:
    """A loaded model seen through the two operations the tools need.

    ``encode``: audio [B, channels, n] at ``sr`` -> latents [B, L, n // hop].
    ``decode``: latents [B, L', T] -> audio [B, channels, T * hop].
    """

    path: Path
    sr: int
    channels: int
    hop: int
    latent_size: int  # dimensions `encode` gives
    module: Any  # RAVE (checkpoint) or torch.jit.ScriptModule (export)
    scripted: bool
    checkpoint: Checkpoint | None = None
    prior: LatentPrior | None = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.no_grad():
            if self.scripted:
                return self.module.encode(x)
            params = self.module.encode(x)
            return to_pca(self.module, params[:, : self.latent_size])  # params = [mean, scale] on dim 1

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        import torch

        z = fit_latent(z, self.decode_size)
        with torch.no_grad():
            if self.scripted:
                return self.module.decode(z)
            return self.module.decode(from_pca(self.module, z))

    @property
    def decode_size(self) -> int:
        """Latent dimensions ``decode`` needs (the export's may differ from ``encode``'s)."""
        if self.scripted and hasattr(self.module, "decode_params"):
            return int(self.module.decode_params[0])
        return self.latent_size


def to_pca(model: Any, z: torch.Tensor) -> torch.Tensor:
    """RAVE latents [B, latent, T] -> PCA space [B, latent, T]:
    ``latent_pca @ (z - latent_mean)`` (rows of ``latent_pca`` are the components)."""
    import torch

    return torch.einsum("ij,bjt->bit", model.latent_pca, z - model.latent_mean[None, :, None])


def from_pca(model: Any, z: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_pca` for [B, L', T] with L' <= latent (missing
    dimensions filled as :func:`fit_latent` does) -> [B, latent, T]."""
    import torch

    z = fit_latent(z, int(model.latent_pca.shape[0]))
    return torch.einsum("ji,bjt->bit", model.latent_pca, z) + model.latent_mean[None, :, None]


def fit_latent(z: torch.Tensor, n: int) -> torch.Tensor:
    """[B, L', T] -> [B, n, T]: drop extra dimensions, fill missing ones with
    N(0, 1) noise (the VAE prior those unused dimensions follow)."""
    import torch

    if z.shape[1] >= n:
        return z[:, :n]
    noise = torch.randn(z.shape[0], n - z.shape[1], z.shape[-1], dtype=z.dtype, device=z.device)
    return torch.cat([z, noise], 1)


# --- loading models ------------------------------------------------------------------


def is_scripted_file(path: Path) -> bool:
    """TorchScript archives are zip files holding a ``code/`` folder; checkpoints
    written by ``torch.save`` are zip files without one."""
    import zipfile

    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in n for n in zf.namelist())


def load_listener(path: Path | str, which: str = "last") -> Listener:
    """Load a run folder, a checkpoint file or an exported ``.ts`` file."""
    import torch

    path = Path(path)
    if not path.exists():
        raise ListenError(f"{path}: no such run folder or model file")
    if is_scripted_file(path):
        import warnings

        try:
            with warnings.catch_warnings():
                # torch >= 2.9 calls TorchScript deprecated; nn~ still loads nothing else.
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # a corrupt archive
            raise ListenError(f"{path}: not a loadable TorchScript model ({exc.__class__.__name__})") from None
        return _scripted_listener(path, module)

    from rave_model.prior import load_prior
    from rave_model.train.checkpoint import load_model

    try:
        model, cfg, ckpt = load_model(path, which)
    except (FileNotFoundError, ValueError) as exc:
        raise ListenError(str(exc)) from None
    return Listener(
        path=path,
        sr=int(cfg.data.sr),
        channels=int(cfg.data.channels),
        hop=int(cfg.hop_length),
        latent_size=int(cfg.model.latent_size),
        module=model.for_inference(),
        scripted=False,
        checkpoint=ckpt,
        prior=load_prior(ckpt),
    )


def _scripted_listener(path: Path, module: Any) -> Listener:
    # nn~'s conventions: `<method>_params` = [in_channels, in_ratio, out_channels, out_ratio].
    for method in ("encode", "decode"):
        if not hasattr(module, f"{method}_params"):
            raise ListenError(f"{path}: the TorchScript model has no nn~ '{method}' method ({method}_params)")
    enc = [int(v) for v in module.encode_params]
    sr = next((int(getattr(module, a)) for a in ("sampling_rate", "sr") if hasattr(module, a)), None)
    if sr is None:
        raise ListenError(f"{path}: the TorchScript model does not say its sampling rate")
    return Listener(path=path, sr=sr, channels=enc[0], hop=enc[3], latent_size=enc[2], module=module, scripted=True)


# --- files -------------------------------------------------------------------------------


def load_audio(path: Path | str, sr: int, channels: int) -> np.ndarray:
    """Any audio file -> float32 [channels, n] at ``sr`` (downmixed or duplicated
    to ``channels``, resampled with rave_data's band-limited resampler)."""
    from rave_data.io.audioinfo import DecodeError
    from rave_data.io.decode import read_all
    from rave_data.process.channels import to_channels
    from rave_data.process.resample import resample

    try:
        audio, file_sr = read_all(path)
    except DecodeError as exc:
        raise ListenError(str(exc)) from None
    if audio.shape[1] == 0:
        raise ListenError(f"{path}: the file holds no audio")
    audio = to_channels(audio, channels)
    if file_sr != sr:
        audio = resample(audio, file_sr, sr)
    return np.ascontiguousarray(audio, dtype=np.float32)


def pad_to_hop(audio: np.ndarray, hop: int) -> np.ndarray:
    """[C, n] -> [C, ceil(n / hop) * hop], zero-padded at the end, so every
    sample falls in a latent frame."""
    extra = (-audio.shape[1]) % hop
    return np.pad(audio, ((0, 0), (0, extra))) if extra else audio


def write_audio(path: Path | str, audio: np.ndarray, sr: int) -> Path:
    """Write [channels, n] float32 as a 32-bit float wav, atomically (a failed
    run leaves no half-written file)."""
    import os

    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        sf.write(str(tmp), np.ascontiguousarray(audio.T), sr, subtype="FLOAT", format="WAV")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_latents(path: Path | str, z: np.ndarray) -> Path:
    """Write latents [L, T] as float32 ``.npy``, atomically."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(z, dtype=np.float32))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_latents(path: Path | str) -> np.ndarray:
    """Read latents [L, T] (a [1, L, T] array is accepted too)."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ListenError(f"{path}: not a readable .npy latent file ({exc})") from None
    if z.ndim == 3 and z.shape[0] == 1:
        z = z[0]
    if z.ndim != 2 or z.shape[1] == 0 or not np.issubdtype(z.dtype, np.floating):
        raise ListenError(f"{path}: latents must be a float array [latent, frames], got {z.dtype} {list(z.shape)}")
    if not np.isfinite(z).all():
        raise ListenError(f"{path}: latents contain NaN or infinite values")
    return z.astype(np.float32)


# --- the tools ------------------------------------------------------------------------------


def encode_file(listener: Listener, audio_path: Path | str, seed: int | None = 0) -> np.ndarray:
    """Audio file -> latents [L, frames] (frames = ceil(n / hop) at the model's
    rate). ``seed`` matters only for an export whose ``encode`` samples."""
    import torch

    x = pad_to_hop(load_audio(audio_path, listener.sr, listener.channels), listener.hop)
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        return listener.encode(torch.from_numpy(x)[None])[0].numpy()


def decode_latents(listener: Listener, z: np.ndarray, seed: int | None = 0) -> np.ndarray:
    """Latents [L', T] -> audio [channels, T * hop]. ``seed`` fixes the noise that
    fills missing dimensions and the decoder's own noise (None: not seeded)."""
    import torch

    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        y = listener.decode(torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))[None])
    return y[0].numpy()


def reconstruct_file(listener: Listener, audio_path: Path | str, seed: int | None = 0) -> np.ndarray:
    """Audio file -> encode -> decode -> audio [channels, n] (same length as the
    input at the model's rate)."""
    import torch

    x = load_audio(audio_path, listener.sr, listener.channels)
    n = x.shape[1]
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        z = listener.encode(torch.from_numpy(pad_to_hop(x, listener.hop))[None])
        y = listener.decode(z)
    return y[0, :, :n].numpy()
