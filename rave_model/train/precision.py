"""How the training step computes: precision, TF32, the optimiser kernel, compilation.

- ``train.precision`` (``--precision``): "32" computes everything in float32;
  "bf16" runs the networks (encoder, decoder, discriminator) under autocast to
  bfloat16; "16-mixed" under autocast to float16 with a gradient scaler (float16
  gradients underflow without it; bfloat16 has float32's range and needs none).
  "auto" resolves to :data:`AUTO_CUDA` on a CUDA GPU that supports it and to "32"
  elsewhere (on a CPU bfloat16 autocast was not faster, see docs/training.md
  "Speed"). Whatever the choice, the losses are float32: the caller casts a
  network's output to float32 before the spectral distances (STFT magnitudes and
  their logs), the KL (softplus, log) and the adversarial losses.
- TF32 matrix products on Ampere and later (a float32 run's matmuls then use the
  tensor cores; cuDNN convolutions already do by PyTorch's default).
- Adam: the fused CUDA kernel on a GPU (one launch for all parameters, and with
  a gradient scaler it skips inf/NaN steps without asking the host), the
  multi-tensor (foreach) one elsewhere.
- ``train.compile`` (``--compile``): :func:`compiled` wraps a module with
  ``torch.compile`` for the training steps only; validation, the PCA and export
  call the plain module, so their other shapes and modes never recompile the
  training graphs. Shapes are static (every training batch has the same shape).
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

PRECISIONS = ("32", "bf16", "16-mixed")
#: What "auto" means on a CUDA GPU with bfloat16 (chosen by bench/bench_train.py).
AUTO_CUDA = "bf16"
#: torch.compile backend; tests set "aot_eager" to check graph breaks and
#: recompiles without paying for code generation.
COMPILE_BACKEND = "inductor"
#: torch.compile mode (None: the default); bench/bench_train.py also times "reduce-overhead".
COMPILE_MODE: str | None = None

_DTYPES = {"32": None, "bf16": torch.bfloat16, "16-mixed": torch.float16}


def resolve_precision(value: Any, device: torch.device) -> str:
    """The precision a run uses on ``device``: "32", "bf16" or "16-mixed".
    Raises ValueError naming the key for an unknown value."""
    name = str(value)
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return AUTO_CUDA
        return "32"
    if name not in PRECISIONS:
        raise ValueError(f"train.precision must be auto, {', '.join(PRECISIONS)}; got {value!r}")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("train.precision=bf16: this GPU has no bfloat16 support; use 16-mixed or 32")
    return name


class Precision:
    """The arithmetic of one run's training steps on one device.

    ``autocast()`` is the context the networks run in; ``step(loss, opt, scaler)``
    does backward + optimiser step, through the gradient scaler for "16-mixed".
    """

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = name
        self.device = device
        self.dtype = _DTYPES[name]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self) -> Any:
        """A gradient scaler for float16, else None (one per optimiser)."""
        if self.name != "16-mixed":
            return None
        # The scaler skips the steps whose gradients overflowed (the first few, while
        # it finds its scale); the schedule stepping anyway is intended, not a bug.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
        return torch.amp.GradScaler(self.device.type)

    @staticmethod
    def step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: Any = None) -> None:
        """zero_grad, backward and step (scaled for float16). No host sync with
        the fused CUDA Adam: the scaler hands it its inf check on the device."""
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
            return
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()


def for_run(cfg: Any, device: torch.device) -> Precision:
    """The run's :class:`Precision` from ``train.precision``; switches TF32 on for
    an Ampere-or-later GPU (process-wide, as it is a global switch)."""
    enable_tf32(device)
    return Precision(resolve_precision(cfg.train.precision, device), device)


def enable_tf32(device: torch.device) -> bool:
    """TF32 matmuls on CUDA compute capability >= 8.0; returns whether it did."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        return False
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    return True


def adam(params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.Adam:
    """Adam with the fastest kernel for ``device``: fused on CUDA, foreach elsewhere."""
    return torch.optim.Adam(params, lr=lr, betas=betas, **_adam_kernel(device))


def _adam_kernel(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"fused": True, "foreach": None}
    return {"fused": None, "foreach": True}


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``opt.load_state_dict(state)`` keeping ``opt``'s own kernel choice: a
    checkpoint saved on a GPU (fused) resumes on a CPU (foreach) and back."""
    groups = [dict(saved, **{k: now[k] for k in ("fused", "foreach", "capturable") if k in now}) for saved, now in zip(state["param_groups"], opt.param_groups)]
    opt.load_state_dict({**state, "param_groups": groups})


def compiled(module: nn.Module, enabled: bool) -> Callable[..., Any]:
    """``torch.compile(module)`` (static shapes) when ``enabled``, else ``module``.
    The result shares the module's parameters; call it for training steps only."""
    if not enabled:
        return module
    if COMPILE_MODE is not None:
        return torch.compile(module, backend=COMPILE_BACKEND, dynamic=False, mode=COMPILE_MODE)
    return torch.compile(module, backend=COMPILE_BACKEND, dynamic=False)


def float32_features(features: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """A discriminator's feature maps in float32 (the adversarial losses' input)."""
    return [[f.float() for f in sub] for sub in features]
