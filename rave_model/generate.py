"""Audio from the prior: unconditional generation and continuation of a recording.

The prior (stage 3, :mod:`rave_model.prior`) samples latent frames one by one;
the decoder turns them into audio. Dimensions the prior does not model (it
models the first ``L`` PCA dimensions) are filled with N(0, 1) noise as the
reference does.

- Unconditional: ``seconds`` of audio, ``ceil(seconds * sr / hop)`` frames,
  trimmed to exactly ``round(seconds * sr)`` samples.
- Primed (``prime=audio file``): the recording is encoded, the prior is
  conditioned on its latents, and the output is the recording (decoded from
  its own latents, so the join is seamless, and rounded up to whole latent
  frames) followed by ``seconds`` of continuation.

Determinism: everything random (sampling, dither, noise fill, the decoder's
noise branch) draws from torch's generator, seeded with ``seed`` inside
``torch.random.fork_rng`` so the caller's random state is untouched. The same
seed, model and arguments give the same samples.

Exported files: a ``.ts`` with nn~'s ``prior`` method generates too (no
priming: nn~'s prior takes only a temperature signal); its first
:data:`TS_WARMUP` frames are dropped because the streaming prior lags.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rave_model.listen import ListenError, Listener, fit_latent, load_audio, pad_to_hop

if TYPE_CHECKING:
    import torch

#: Frames an exported prior runs before its output is kept (its skew latency
#: is ``L - 1`` frames; 64 covers any prior up to 65 dimensions).
TS_WARMUP = 64


def generate(
    listener: Listener,
    seconds: float,
    temperature: float = 1.0,
    seed: int | None = None,
    prime: Path | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Audio [channels, n] at ``listener.sr``; see the module docstring.
    ``progress(done, total)`` follows the prior's steps."""
    import torch

    if seconds <= 0 or not math.isfinite(seconds):
        raise ListenError(f"--seconds must be a positive number, got {seconds}")
    if temperature < 0 or not math.isfinite(temperature):
        raise ListenError(f"--temperature must be >= 0, got {temperature}")
    n_out = int(round(seconds * listener.sr))
    frames = -(-n_out // listener.hop)
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        if listener.prior is None:
            if listener.scripted and hasattr(listener.module, "prior_params"):
                if prime is not None:
                    raise ListenError(f"{listener.path}: an exported model cannot be primed (use the run folder)")
                return _generate_scripted(listener, frames, temperature)[:, :n_out]
            raise ListenError(f"{listener.path}: this model has no trained prior (run `ravemodel fit` through stage 3)")
        if prime is None:
            z = listener.prior.sample(frames, temperature=temperature, progress=progress)
            return _decode(listener, z)[:, :n_out]
        return _continue(listener, Path(prime), frames, temperature, n_out, progress)


def _decode(listener: Listener, z: torch.Tensor) -> np.ndarray:
    import torch

    with torch.no_grad():
        return listener.decode(z)[0].numpy()


def _continue(
    listener: Listener, prime: Path, frames: int, temperature: float, n_out: int, progress: Callable[[int, int], None] | None
) -> np.ndarray:
    import torch

    assert listener.prior is not None
    audio = load_audio(prime, listener.sr, listener.channels)
    z_prime = listener.encode(torch.from_numpy(pad_to_hop(audio, listener.hop))[None])  # [1, latent, Tp]
    dims = listener.prior.latent_size
    z = listener.prior.sample(frames, temperature=temperature, prime=z_prime[:, :dims], progress=progress)
    tp = z_prime.shape[-1]
    # The prime keeps all its dimensions; the continuation's unmodelled ones are noise.
    cont = fit_latent(z[..., tp:], z_prime.shape[1])
    y = _decode(listener, torch.cat([z_prime, cont], -1))
    # Keep the prime's last partial frame: cutting it out would put a jump at the join.
    return y[:, : tp * listener.hop + n_out]


def _generate_scripted(listener: Listener, frames: int, temperature: float) -> np.ndarray:
    import torch

    # nn~'s prior maps its input x to temperature softplus(x) / log 2; invert it.
    t = max(temperature, 1e-3)
    control = math.log(math.expm1(t * math.log(2.0)))
    with torch.no_grad():
        z = listener.module.prior(torch.full((1, 1, TS_WARMUP + frames), control))
    return _decode(listener, z[..., TS_WARMUP:])
