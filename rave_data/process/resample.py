"""Band-limited sample-rate conversion, streaming, with exact output length.

The filter is torchaudio's Kaiser-windowed sinc kernel (the formula of
``torchaudio.transforms.Resample``, computed here with numpy in float64),
applied the way torchaudio applies it - a strided convolution, here one
matrix product over a strided view - but over a sliding buffer, so a file
streams through in blocks of any size and gives the same samples as one call
on the whole array.

Why numpy and not torch itself: importing the CUDA build of torch costs about
600 MB of resident memory per process, more than ``prep`` may use on a 1-hour
file; numpy's BLAS runs the same product at least as fast, with samples
equal to 2e-6 (docs/processing.md has the comparison).

Why this filter: it is polyphase (cost per output sample = one short dot
product) and runs several thousand times real time on one core. soxr would be
as good but is not a dependency;
``pedalboard.Resample`` is a lo-fi effect (it keeps the input rate), not a
rate converter.

How streaming works. After reducing the ratio by the gcd to ``orig:new``,
output chunk ``k`` (``new`` samples) is computed from the input window
``[k*orig - width, k*orig + orig + width)``. We keep the input that future
chunks still need (fewer than ``orig + 2*width`` samples), compute every chunk
whose window is complete, and at :meth:`StreamResampler.flush` pad the end
with zeros exactly as torchaudio pads, then cut to the promised length.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Kaiser-windowed sinc, 32 zero crossings per side, cut-off at 95 % of the
#: lower Nyquist, beta 10. Measured (96k -> 48k): flat to 0.85 x Nyquist, -0.4 dB
#: at 0.9, images/aliases from 1.04 x Nyquist up below -78 dB and below -100 dB
#: further out; several hundred to a few thousand times real time on one core.
#: torchaudio's default (Hann, 6 crossings, 0.99) leaves a 20 kHz tone taken
#: from 96k to 32k only 20 dB down - far from the -60 dB we require.
LOWPASS_FILTER_WIDTH = 32
ROLLOFF = 0.95
BETA = 10.0

#: Chunks are grouped until conv1d has at least this many output channels
#: (see StreamResampler._group_chunks); 32 measured fastest on x86 CPUs.
_MIN_OUT_CHANNELS = 32


#: Largest kernel (floats) built for one ratio: 16 MB. Beyond it the ratio is approximated.
MAX_KERNEL = 1 << 22


def _kernel_floats(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> int:
    width = math.ceil(lowpass_filter_width * orig / (min(orig, new) * rolloff))
    return new * (orig + 2 * width)


def reduced_ratio(sr_in: int, sr_out: int, lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
                  rolloff: float = ROLLOFF) -> tuple[int, int]:
    """(orig, new): the conversion ratio ``sr_out / sr_in`` as the kernel uses it.

    Normally the ratio reduced by the gcd (44100 -> 48000: 147, 160). Rates
    with a tiny gcd (22254 -> 48000: 11127, 24000) would need a kernel of
    ``new x orig`` taps - a gigabyte. Then the closest ratio at or below the
    true one whose kernel fits in :data:`MAX_KERNEL` is used instead (relative
    error about 1e-6, a pitch change no one hears); being at or below, the
    stream never outruns the exact length, and the few missing frames at the
    end are silence.
    """
    g = math.gcd(sr_in, sr_out)
    orig, new = sr_in // g, sr_out // g
    if _kernel_floats(orig, new, lowpass_filter_width, rolloff) <= MAX_KERNEL:
        return orig, new
    best_orig, best_new = 1, 0
    for q in range(1, 4097):
        p = sr_out * q // sr_in  # p / q <= sr_out / sr_in
        if p and p * best_orig > best_new * q and _kernel_floats(q, p, lowpass_filter_width, rolloff) <= MAX_KERNEL:
            best_orig, best_new = q, p
    return best_orig, best_new


def sinc_kernel(orig: int, new: int, lowpass_filter_width: int, rolloff: float, beta: float) -> tuple[np.ndarray, int]:
    """([new, orig + 2*width] float32 kernel, width): torchaudio's
    ``sinc_interp_kaiser`` kernel for the reduced ratio ``orig:new``, row ``j``
    giving output phase ``j`` from input ``[k*orig - width, k*orig + orig + width)``."""
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    idx = np.arange(-width, width + orig, dtype=np.float64) / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx[None, :]) * base_freq
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    window = np.i0(beta * np.sqrt(1.0 - (t / lowpass_filter_width) ** 2)) / np.i0(beta)
    t *= math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0.0, 1.0, np.sin(t) / t)
    return (kernel * window * (base_freq / orig)).astype(np.float32), width


def out_frames(n_in: int, sr_in: int, sr_out: int) -> int:
    """Output length for ``n_in`` input frames: round(n_in * sr_out / sr_in), halves up."""
    return (2 * n_in * sr_out + sr_in) // (2 * sr_in)


class StreamResampler:
    """Resample a stream of [channels, n] float32 blocks from ``sr_in`` to ``sr_out``.

    Feed blocks with :meth:`process` (each returns the output ready so far,
    possibly empty), then call :meth:`flush` once. The outputs concatenated
    have exactly :func:`out_frames` (``round(total_in * sr_out / sr_in)``)
    frames and equal :func:`resample` on the whole input.
    """

    def __init__(
        self,
        sr_in: int,
        sr_out: int,
        channels: int,
        lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
        rolloff: float = ROLLOFF,
        beta: float = BETA,
    ) -> None:
        if sr_in <= 0 or sr_out <= 0:
            raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
        self.sr_in, self.sr_out, self.channels = int(sr_in), int(sr_out), int(channels)
        self._orig, self._new = reduced_ratio(self.sr_in, self.sr_out, lowpass_filter_width, rolloff)
        self._in_total = 0
        self._out_total = 0
        self._flushed = False
        self._kernel: Any = None
        self._width = 0
        if self.sr_in != self.sr_out:
            # The kernel depends on the reduced ratio only.
            kernel, self._width = sinc_kernel(self._orig, self._new, lowpass_filter_width, rolloff, beta)
            self._kernel = self._group_chunks(kernel)  # [new, orig + 2*width]
        # Input not yet consumed, starting ``width`` zeros before the first
        # sample (torchaudio's left padding).
        self._buf = np.zeros((self.channels, self._width), np.float32)

    def _group_chunks(self, kernel: Any) -> Any:
        """Widen the kernel to compute several chunks per stride when ``new`` is small.

        For integer decimation (96k -> 48k: orig 2, new 1) conv1d would have a
        single output channel, which runs about ten times below the speed of a
        wide one. Grouping ``m`` consecutive chunks into one (stride ``m*orig``,
        ``m*new`` output channels, each chunk's kernel shifted by ``i*orig``)
        computes the very same sums as a matrix product the CPU runs well.
        """
        m = max(1, -(-_MIN_OUT_CHANNELS // self._new))
        if m == 1:
            return np.ascontiguousarray(kernel)
        klen = self._orig + 2 * self._width
        wide = np.zeros((m * self._new, m * self._orig + 2 * self._width), dtype=kernel.dtype)
        for i in range(m):
            wide[i * self._new : (i + 1) * self._new, i * self._orig : i * self._orig + klen] = kernel
        self._orig, self._new = m * self._orig, m * self._new
        return wide

    @property
    def passthrough(self) -> bool:
        return self.sr_in == self.sr_out

    def _convolve(self, buf: np.ndarray, chunks: int) -> np.ndarray:
        """Output chunks 0..chunks-1 of ``buf`` ([C, L]) as [C, chunks*new]."""
        klen = self._orig + 2 * self._width
        x = buf[:, : (chunks - 1) * self._orig + klen]
        windows = np.lib.stride_tricks.sliding_window_view(x, klen, axis=1)[:, :: self._orig]  # [C, chunks, klen]
        y = windows @ self._kernel.T  # [C, chunks, new]
        return y.reshape(buf.shape[0], chunks * self._new)

    def _run(self, buf: np.ndarray) -> np.ndarray:
        klen = self._orig + 2 * self._width
        chunks = (buf.shape[1] - klen) // self._orig + 1 if buf.shape[1] >= klen else 0
        if chunks <= 0:
            self._buf = buf
            return np.zeros((self.channels, 0), np.float32)
        out = self._convolve(buf, chunks)
        self._buf = buf[:, chunks * self._orig :]
        return out

    def process(self, block: np.ndarray) -> np.ndarray:
        """Take [channels, n] input; return the [channels, m] output now complete."""
        if self._flushed:
            raise RuntimeError("StreamResampler.process called after flush")
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a [{self.channels}, n] block, got shape {block.shape}")
        block = block.astype(np.float32, copy=False)
        self._in_total += block.shape[1]
        if self.passthrough:
            self._out_total += block.shape[1]
            return block
        out = self._run(np.concatenate([self._buf, block], axis=1))
        self._out_total += out.shape[1]
        return out

    def flush(self) -> np.ndarray:
        """Return the last output frames; the stream is finished afterwards."""
        if self._flushed:
            raise RuntimeError("StreamResampler.flush called twice")
        self._flushed = True
        want = out_frames(self._in_total, self.sr_in, self.sr_out) - self._out_total
        if self.passthrough or want <= 0:
            return np.zeros((self.channels, 0), np.float32)
        # The same right padding torchaudio uses: enough for the last chunk.
        pad = np.zeros((self.channels, self._width + self._orig), np.float32)
        out = self._run(np.concatenate([self._buf, pad], axis=1))
        self._buf = np.zeros((self.channels, 0), np.float32)
        out = out[:, :want]
        if out.shape[1] < want:  # an approximated ratio (see reduced_ratio) ends a few frames short
            out = np.concatenate([out, np.zeros((self.channels, want - out.shape[1]), np.float32)], axis=1)
        self._out_total += out.shape[1]
        return out


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample a whole [channels, n] array; the same samples as streaming it."""
    rs = StreamResampler(sr_in, sr_out, x.shape[0])
    head = rs.process(x)
    tail = rs.flush()
    return np.concatenate([head, tail], axis=1) if tail.shape[1] else head
