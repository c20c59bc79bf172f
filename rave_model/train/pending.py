"""Step losses kept on the device until the runner needs them on the host.

Converting a loss to a Python float waits for the GPU to finish the step (a
host-device synchronisation), which stalls the queue of work the host has
already launched ahead. The runner therefore keeps each step's losses as
tensors here and brings them to the host together, in one copy, only when it
needs them: at log steps (every ``train.log_every``), before a validation and
before any checkpoint is written. The NaN guard runs on those values, so a
non-finite loss is still caught at its own step number, before anything is saved.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class PendingLosses:
    """``add(step, {name: tensor or float})`` each step; ``flush()`` returns
    ``[(step, {name: float})]`` in step order and empties the buffer."""

    def __init__(self) -> None:
        self._steps: list[tuple[int, Mapping[str, Any]]] = []

    def __len__(self) -> int:
        return len(self._steps)

    def add(self, step: int, losses: Mapping[str, Any]) -> None:
        """``losses``: 0-d tensors (left where they are) or numbers."""
        self._steps.append((step, dict(losses)))

    def flush(self) -> list[tuple[int, dict[str, float]]]:
        import torch

        tensors = [v.detach().float().reshape(()) for _, losses in self._steps for v in losses.values() if isinstance(v, torch.Tensor)]
        # One stack and one device -> host copy for the whole window.
        if tensors:
            device = tensors[0].device
            tensors = [t.to(device) for t in tensors]
        values = iter(torch.stack(tensors).tolist() if tensors else [])
        out = [
            (step, {k: next(values) if isinstance(v, torch.Tensor) else float(v) for k, v in losses.items()})
            for step, losses in self._steps
        ]
        self._steps.clear()
        return out
