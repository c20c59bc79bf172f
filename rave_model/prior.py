"""Stage 3: an autoregressive prior over RAVE's latent sequences.

The encoder of a trained RAVE turns audio into a latent sequence ``z`` [B, L, T]
(L dimensions, one frame per ``ratio`` samples). After PCA (``latent_pca`` /
``latent_mean``, see :mod:`rave_model.model`) and cropping to the first L
dimensions, every dimension is close to a standard normal. The prior learns
``p(z_t | z_<t)`` so that the decoder can be driven without any input audio:
unconditional generation, or continuing a recording (``--prime``).

The facts follow acids-rave's ``rave/prior`` (the code here is our own):

- **Quantised normal.** Each dimension is mapped through the normal CDF to
  ``[0, 1)`` and cut into ``resolution`` equal bins, so predicting a frame is a
  ``resolution``-way classification per dimension (cross-entropy), which models
  multi-modal distributions a Gaussian output could not. Decoding a bin picks
  a uniform point inside it (dither) and maps it back through the inverse CDF.
- **Skew ("diagonal shift").** Dimension ``d`` is advanced by ``L-1-d`` frames
  before the causal network sees it. One step of the network therefore predicts
  dimension 0 at time ``t+L-1`` ... dimension ``L-1`` at time ``t``, and each
  dimension is conditioned on the lower dimensions *of the same frame*: the
  dimensions of one frame are sampled jointly rather than independently. The
  price is ``L-1`` frames of latency when streaming.
- **Network.** A WaveNet: a causal input convolution, ``n_layers`` gated
  residual blocks with dilations ``1, 2, 4, ...`` repeating every
  ``cycle_size`` layers, summed skip connections, and a 1x1 output head giving
  ``resolution`` logits per dimension.

Every convolution is causal and can run in two modes: whole sequences with
zero history (training, :meth:`LatentPrior.forward`) and frame by frame with
cached history (:meth:`LatentPrior.step`), which gives exactly the same
numbers. The frame-by-frame path is what generation and the exported ``prior``
method use.

Export (``rave_model/export.py``)
---------------------------------
``torch.jit.script(prior)`` works on an eval-mode :class:`LatentPrior`. The
scripted module exposes:

- ``prior(temperature)`` : ``temperature`` [B, 1, T] -> ``z`` [B, L, T], in
  the PCA space of the RAVE the prior was trained on (first ``L`` principal
  dimensions, ``L = prior.latent_size``). It is nn~'s ``prior`` method:
  ``<prior>_params = [1, ratio, L_export, ratio]``. The input is a control
  signal, mapped to a temperature by ``softplus(x) / log(2)`` so nn~'s silent
  input (0) means temperature 1, negative values sharpen and positive values
  widen the distribution. The state (last frame, convolution caches, skew
  cache) lives in the module: consecutive calls continue one sequence; a new
  batch size starts a fresh one. Output lags ``L-1`` frames (the skew).
  If the export keeps ``L_export != L`` dimensions, crop or zero-pad the
  output; the export's ``decode`` fills missing dimensions as usual.
- ``reset()`` : forget the state (start a new sequence).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:
    from rave_model.train.checkpoint import Checkpoint

#: Quantised values are clamped to +-CLAMP standard deviations when decoded,
#: so the outermost bins (which reach to infinity) cannot produce huge values.
CLAMP = 4.0


# --- quantised normal -----------------------------------------------------------


def to_bins(z: torch.Tensor, resolution: int) -> torch.Tensor:
    """Latent values [B, L, T] -> bin indices [B, L, T] (long, ``0..resolution-1``),
    equal-probability bins of a standard normal."""
    u = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    return torch.clamp(torch.floor(u * resolution), 0, resolution - 1).long()


def from_bins(idx: torch.Tensor, resolution: int, dither: bool = True, clamp: float = CLAMP) -> torch.Tensor:
    """Bin indices [B, L, T] -> latent values [B, L, T]: a (dithered) point of the
    bin mapped back through the inverse normal CDF."""
    offset = torch.rand(idx.shape, device=idx.device) if dither else torch.full(idx.shape, 0.5, device=idx.device)
    u = (idx.float() + offset) / resolution
    # Keep u strictly inside (0, 1): erfinv(+-1) is infinite.
    u = torch.clamp(u, 1e-6, 1.0 - 1e-6)
    return torch.clamp(math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0), -clamp, clamp)


def one_hot(idx: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bin indices [B, L, T] -> stacked one-hot [B, L*resolution, T]; channel
    ``d*resolution + r`` is bin ``r`` of dimension ``d``."""
    b, n, t = idx.shape
    x = F.one_hot(idx, resolution)  # [B, L, T, R]
    return x.permute(0, 1, 3, 2).reshape(b, n * resolution, t).float()


# --- skew -------------------------------------------------------------------------


def skew(z: torch.Tensor) -> torch.Tensor:
    """[B, L, T] -> [B, L, T-L+1]: dimension d advanced by L-1-d frames, so
    ``out[:, d, s] = z[:, d, s + L-1-d]``."""
    n, t = z.shape[1], z.shape[-1]
    return torch.stack([z[:, d, n - 1 - d : t - d] for d in range(n)], 1)


def unskew(s: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`skew`: [B, L, S] -> [B, L, S-L+1] with
    ``out[:, d, j] = s[:, d, j + d]``. Both lose the frames where some dimension
    is missing: ``unskew(skew(z)) == z[..., L-1 : T-L+1]``."""
    n, t = s.shape[1], s.shape[-1]
    return torch.stack([s[:, d, d : t - n + 1 + d] for d in range(n)], 1)


# --- causal convolutions with a cache --------------------------------------------


class CausalConv1d(nn.Conv1d):
    """A Conv1d that only looks back. ``forward`` pads whole sequences with zeros
    (training); ``step`` continues from the inputs of the previous ``step`` call,
    which gives the same outputs as one ``forward`` over the concatenation.

    Computed as a 1x1 convolution over the stacked kernel taps rather than a
    dilated ``conv1d``: on CPU, dilated ``conv1d`` falls back to a per-element
    kernel (``slow_conv_dilated2d``) that made one prior step many times
    slower. The weights keep ``nn.Conv1d``'s layout ([out, in, kernel]).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.taps = kernel_size
        self.spacing = dilation
        self.history = (kernel_size - 1) * dilation
        # [B, in_channels, history]; empty until the first step (batch unknown).
        self.register_buffer("cache", torch.zeros(0, in_channels, self.history), persistent=False)

    def _causal(self, window: torch.Tensor, n: int) -> torch.Tensor:
        """window [B, C_in, history + n] -> [B, C_out, n]."""
        if self.taps > 1:
            # Tap i of output j reads window[j + i * spacing]. Stack the taps next
            # to their channel ([B, C, taps, n] -> [B, C * taps, n]) so the weight
            # [out, C, taps] is used as the view [out, C * taps], never copied.
            slices = [window[:, :, i * self.spacing : i * self.spacing + n] for i in range(self.taps)]
            window = torch.stack(slices, 2).reshape(window.shape[0], -1, n)
        # A 1x1 convolution is conv1d's fast path (no dilation, no unfolding).
        return F.conv1d(window, self.weight.reshape(self.out_channels, -1, 1), self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, T] -> [B, C_out, T], zero history."""
        return self._causal(F.pad(x, (self.history, 0)), x.shape[-1])

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, T] -> [B, C_out, T], continuing the cached history."""
        if self.history == 0:
            return self._causal(x, x.shape[-1])
        if self.cache.shape[0] != x.shape[0]:
            self.cache = torch.zeros(x.shape[0], self.in_channels, self.history, dtype=x.dtype, device=x.device)
        n = x.shape[-1]
        x = torch.cat([self.cache, x], -1)
        self.cache = x[..., x.shape[-1] - self.history :]
        return self._causal(x, n)

    def reset(self) -> None:
        self.cache = torch.zeros(0, self.in_channels, self.history, dtype=self.weight.dtype, device=self.weight.device)


class GatedResidual(nn.Module):
    """WaveNet block: dilated causal conv -> tanh * sigmoid gate -> 1x1 residual
    and 1x1 skip outputs. res [B, hidden_size, T], skip [B, skip_size, T]."""

    def __init__(self, hidden_size: int, skip_size: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.dilated = CausalConv1d(hidden_size, 2 * hidden_size, kernel_size, dilation)
        self.to_res = CausalConv1d(hidden_size, hidden_size)
        self.to_skip = CausalConv1d(hidden_size, skip_size)

    def _gate(self, h: torch.Tensor, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = torch.chunk(h, 2, 1)
        g = torch.tanh(a) * torch.sigmoid(b)
        return x + self.to_res(g), skip + self.to_skip(g)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._gate(self.dilated(x), x, skip)

    def step(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._gate(self.dilated.step(x), x, skip)


# --- the prior ----------------------------------------------------------------------


class LatentPrior(nn.Module):
    """Autoregressive WaveNet over quantised, skewed latents.

    Training: :meth:`loss` (``z`` [B, L, T] -> scalar cross-entropy in nats per
    dimension and frame). Sampling: :meth:`sample` (Python, offline, supports
    priming) or :meth:`prior` (TorchScript, streaming, for nn~).
    """

    def __init__(
        self,
        latent_size: int,
        resolution: int = 32,
        hidden_size: int = 512,
        skip_size: int = 256,
        kernel_size: int = 3,
        cycle_size: int = 4,
        n_layers: int = 10,
    ) -> None:
        super().__init__()
        if latent_size < 1 or resolution < 2:
            raise ValueError("the prior needs latent_size >= 1 and resolution >= 2")
        self.latent_size = latent_size
        self.resolution = resolution
        self.skip_size = skip_size
        self.inp = CausalConv1d(latent_size * resolution, hidden_size, kernel_size)
        self.blocks = nn.ModuleList(
            GatedResidual(hidden_size, skip_size, kernel_size, 2 ** (i % cycle_size)) for i in range(n_layers)
        )
        self.out_hidden = CausalConv1d(skip_size, skip_size)
        self.out_logits = CausalConv1d(skip_size, latent_size * resolution)
        # Frames of context one prediction sees (the input conv plus every block).
        self.receptive_field = (kernel_size - 1) * (1 + sum(2 ** (i % cycle_size) for i in range(n_layers))) + 1

        # Streaming state for `prior` (non-persistent: never in checkpoints).
        # last: the one-hot frame fed next [B, L*R, 1]; zeros mean "no frame yet",
        # exactly the start frame `loss` trains with. unskew_cache: [B, L, L-1].
        self.register_buffer("last", torch.zeros(0, latent_size * resolution, 1), persistent=False)
        self.register_buffer("unskew_cache", torch.zeros(0, latent_size, latent_size - 1), persistent=False)

    # -- network -------------------------------------------------------------------

    def _head(self, skip: torch.Tensor) -> torch.Tensor:
        return self.out_logits(F.leaky_relu(self.out_hidden(F.leaky_relu(skip, 0.2)), 0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One-hot frames [B, L*R, T] -> logits [B, L*R, T] for the *next* frame
        at every position (zero history)."""
        h = F.leaky_relu(self.inp(x), 0.2)
        skip = torch.zeros(h.shape[0], self.skip_size, h.shape[-1], dtype=h.dtype, device=h.device)
        for block in self.blocks:
            h, skip = block(h, skip)
        return self._head(skip)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Like :meth:`forward` but continuing the cached history of earlier
        ``step`` calls: [B, L*R, T] -> [B, L*R, T]."""
        h = F.leaky_relu(self.inp.step(x), 0.2)
        skip = torch.zeros(h.shape[0], self.skip_size, h.shape[-1], dtype=h.dtype, device=h.device)
        for block in self.blocks:
            h, skip = block.step(h, skip)
        return self._head(skip)

    @torch.jit.export
    def reset(self) -> None:
        """Forget all history: the next ``step``/``prior`` starts a new sequence."""
        self.inp.reset()
        for block in self.blocks:
            block.dilated.reset()
        self.last = torch.zeros(0, self.latent_size * self.resolution, 1, device=self.last.device)
        self.unskew_cache = torch.zeros(0, self.latent_size, self.latent_size - 1, device=self.last.device)

    # -- training --------------------------------------------------------------------

    def loss(self, z: torch.Tensor, network: nn.Module | None = None) -> torch.Tensor:
        """Mean cross-entropy (nats) of predicting every frame of ``z`` [B, L, T]
        (T >= L) from the frames before it, in the skewed order. ``network``:
        this module wrapped (e.g. in DDP) to run the forward pass through."""
        idx = to_bins(skew(z), self.resolution)  # [B, L, S]
        x = one_hot(idx, self.resolution)
        # Position s predicts frame s from frames < s: shift right by one and feed
        # an all-zero "no frame yet" start frame, which sampling also starts from.
        x = F.pad(x[..., :-1], (1, 0))
        logits = (self if network is None else network)(x)  # [B, L*R, S]
        b, _, s = logits.shape
        # cross_entropy wants the classes on dim 1: [B, R, L, S] against [B, L, S].
        logits = logits.reshape(b, self.latent_size, self.resolution, s).transpose(1, 2)
        return F.cross_entropy(logits, idx)

    # -- sampling -----------------------------------------------------------------------

    def _sample_bins(self, logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """logits [B, L*R, 1], temperature [B, 1, 1] (> 0) -> bins [B, L, 1]."""
        b = logits.shape[0]
        logits = logits.reshape(b, self.latent_size, self.resolution) / temperature
        probs = torch.softmax(logits.reshape(b * self.latent_size, self.resolution), -1)
        return torch.multinomial(probs, 1).reshape(b, self.latent_size, 1)

    @torch.jit.export
    def prior(self, temperature: torch.Tensor) -> torch.Tensor:
        """nn~'s ``prior`` method: control signal [B, 1, T] -> latents [B, L, T].

        Temperature per frame is ``softplus(x) / log(2)`` (x = 0 -> 1). Streams:
        state carries over between calls; output lags L-1 frames (the skew).
        """
        b, n = temperature.shape[0], temperature.shape[-1]
        dtype = self.inp.weight.dtype  # the module's, whatever .to() made it
        if self.last.shape[0] != b or self.last.dtype != dtype:
            self.reset()
            self.last = torch.zeros(b, self.latent_size * self.resolution, 1, dtype=dtype, device=temperature.device)
            self.unskew_cache = torch.zeros(b, self.latent_size, self.latent_size - 1, dtype=dtype, device=temperature.device)
        temp = F.softplus(temperature.mean(1, keepdim=True)) / math.log(2.0)  # [B, 1, T]
        frames: list[torch.Tensor] = []
        for t in range(n):
            bins = self._sample_bins(self.step(self.last), torch.clamp(temp[..., t : t + 1], min=1e-3).to(dtype))
            self.last = one_hot(bins, self.resolution).to(dtype)
            frames.append(from_bins(bins, self.resolution, True).to(dtype))
        window = torch.cat([self.unskew_cache] + frames, -1)  # [B, L, L-1+T]
        self.unskew_cache = window[..., window.shape[-1] - (self.latent_size - 1) :]
        return unskew(window)

    @torch.no_grad()
    def sample(
        self,
        n_frames: int,
        batch: int = 1,
        temperature: float = 1.0,
        prime: torch.Tensor | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Offline sampling (Python only): ``n_frames`` new frames -> z [B, L, Tp + n_frames].

        ``prime`` [B, L, Tp] (latents of a recording, PCA space) is kept as is at
        the start; the new frames continue it. ``temperature <= 0`` takes the most
        likely bin instead of sampling. Randomness comes from torch's global
        generator (seed it, or wrap in ``torch.random.fork_rng``). ``progress(done,
        total)`` is called as steps complete.
        """
        n, r = self.latent_size, self.resolution
        tp = 0 if prime is None else prime.shape[-1]
        if prime is not None:
            if prime.shape[1] != n:
                raise ValueError(f"prime has {prime.shape[1]} latent dimensions, the prior models {n}")
            batch = prime.shape[0]
        # Skewed position s holds dimension d at frame s - d of the output
        # timeline (see `skew`); the first L-1 frames are a warm-up and dropped.
        # Where that frame is a prime frame, the prime's bin is forced.
        steps = n - 1 + tp + n_frames
        device = self.out_logits.weight.device
        forced = torch.full((batch, n, steps), -1, dtype=torch.long, device=device)
        if prime is not None:
            pbins = to_bins(prime, r).to(device)
            for d in range(n):
                forced[:, d, d : d + tp] = pbins[:, d]
        # Positions where every dimension is forced need no sampling: their inputs
        # are all known, so one `step` call runs the whole stretch at once.
        complete = (forced >= 0).all(1)[0].tolist() if prime is not None else [False] * steps
        self.reset()
        x = torch.zeros(batch, n * r, 1, device=device)
        bins_seq: list[torch.Tensor] = []
        temp = torch.full((batch, 1, 1), max(temperature, 1e-6), device=device)
        s = 0
        while s < steps:
            end = s
            while end < steps and complete[end]:
                end += 1
            if end - s > 1:
                known = forced[:, :, s:end]
                self.step(torch.cat([x, one_hot(known[:, :, :-1], r)], -1))
                bins = known
            else:
                end = s + 1
                logits = self.step(x)
                if temperature <= 0:
                    bins = logits.reshape(batch, n, r).argmax(-1, keepdim=True)
                else:
                    bins = self._sample_bins(logits, temp)
                known = forced[:, :, s:end]
                bins = torch.where(known >= 0, known, bins)
            bins_seq.append(bins)
            x = one_hot(bins[:, :, -1:], r)
            s = end
            if progress is not None:
                progress(s, steps)
        self.reset()
        z = unskew(from_bins(torch.cat(bins_seq, -1), r, True))  # [B, L, tp + n_frames]
        if prime is not None:
            # The prime frames decode from the exact latents, not their bins.
            z = torch.cat([prime.to(z), z[..., tp:]], -1)
        return z


#: LatentPrior constructor arguments a PriorConfig may carry (same names).
NETWORK_KEYS = ("resolution", "hidden_size", "skip_size", "kernel_size", "cycle_size", "n_layers")


def build_prior(latent_size: int, config: Any) -> LatentPrior:
    """A :class:`LatentPrior` from any object (dataclass, namespace) or dict with
    the :data:`NETWORK_KEYS`; missing keys take the defaults."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    kwargs = {k: int(get(k)) for k in NETWORK_KEYS if get(k) is not None}
    return LatentPrior(latent_size, **kwargs)


def latent_dims_for_fidelity(fidelity: torch.Tensor, target: float) -> int:
    """How many PCA dimensions explain ``target`` of the variance, from RAVE's
    ``fidelity`` buffer [latent_size] (cumulative explained variance, rising to 1)."""
    above = torch.nonzero(fidelity >= target)
    return int(above[0, 0]) + 1 if len(above) else int(fidelity.shape[0])


def load_prior(checkpoint: Checkpoint) -> LatentPrior | None:
    """The prior stored in a training checkpoint (``ravemodel fit``), in eval
    mode on the CPU, or None when the run has no prior (yet).

    Stage 3 keeps ``{"args": LatentPrior kwargs, "prior": state_dict, ...}`` as
    its stage state; the prior is the last stage, so a run whose checkpoint is
    in (or past) the prior stage carries it there. A prior interrupted mid-stage
    is returned too: it is usable, only less trained.
    """
    if checkpoint.stage != "prior":
        return None
    state = checkpoint.stage_state
    if "args" not in state or "prior" not in state:
        return None
    args = dict(state["args"])
    prior = build_prior(int(args.pop("latent_size")), args)
    prior.load_state_dict(state["prior"])
    return prior.eval()
