"""Training output: a rich progress display per stage and TensorBoard events.

On a terminal the stage's progress is a live rich bar (step, steps/s, ETA,
latest losses); when the output is a file or a pipe (a batch job's log) the
same facts are printed as one plain line every ``log_every`` steps instead,
so logs stay readable.

Only the main process logs (``enabled=False`` elsewhere makes every method a
no-op), so a distributed launcher creates one logger per rank unchanged.
TensorBoard event files go to ``RUN/tensorboard`` (``tensorboard --logdir RUN``).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def human_count(n: int) -> str:
    """12345678 -> "12.35M", 21432 -> "21.4k"."""
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(n)


def duration(seconds: float) -> str:
    """3725 -> "1:02:05", 200000 -> "2d 07:33:20" (training ETAs run to days)."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{h:02d}:{m:02d}:{s:02d}"


#: Share of a log window spent waiting for the next batch above which the run log
#: says the loader is the bottleneck.
DATA_WAIT_WARNING = 0.2


class DataWait:
    """How long the training loop waits for its next batch, per log window.

    The host launches a step's GPU work and moves on, so on an accelerator the
    time spent in ``next(batches)`` is time the loader had no batch ready. The
    first window after a stream starts is ignored (the workers are starting);
    after that, a window waiting :data:`DATA_WAIT_WARNING` or more of its wall
    time produces one warning per stage, saying what to change.
    """

    def __init__(self, threshold: float | None = None) -> None:
        self.threshold = DATA_WAIT_WARNING if threshold is None else threshold
        self.waited = 0.0
        self.windows = 0
        self.warned = False
        self._t0 = time.perf_counter()

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.waited += time.perf_counter() - t

    def window_warning(self, workers: int, cores: int) -> str | None:
        """Close the current window; the warning text, or None."""
        now = time.perf_counter()
        wall, waited = now - self._t0, self.waited
        self._t0, self.waited = now, 0.0
        self.windows += 1
        if self.windows == 1 or self.warned or wall <= 0 or waited / wall < self.threshold:
            return None
        self.warned = True
        return data_wait_advice(waited / wall, workers, cores)


def data_wait_advice(share: float, workers: int, cores: int) -> str:
    """The run-log warning for a step that waited ``share`` of its time on data."""
    head = f"warning: the training step waited for data {share:.0%} of the time (the loader is the bottleneck); "
    if workers == 0:
        return head + f"load in worker processes: --set train.num_workers=N (this machine has {cores} usable cores)"
    if workers < cores - 1:
        return head + (
            f"raise --set train.num_workers (now {workers}; this machine has {cores} usable cores), "
            "or lighten the online augmentation plan (--augment-config)"
        )
    return head + (
        f"the {workers} workers already use the machine's {cores} cores: lighten the online augmentation plan "
        "(--augment-config; pitch_shift and time_stretch cost the most) or augment offline with `ravedata prep --augment`"
    )


class TrainLogger:
    def __init__(self, run_dir: Path | str, enabled: bool = True, console: Console | None = None, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self.run_dir = Path(run_dir)
        self._writer = None
        self._tensorboard = tensorboard and enabled
        self._progress: Progress | None = None
        self._task: Any = None
        self._t0 = 0.0
        self._step0 = 0
        self._name, self._total, self._every = "", 0, 100

    # -- plain messages -----------------------------------------------------------------
    def info(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False, soft_wrap=True)

    # -- TensorBoard --------------------------------------------------------------------
    @property
    def writer(self):
        if self._writer is None and self._tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer

    def scalars(self, prefix: str, values: dict[str, float], global_step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, global_step)

    def audio(self, tag: str, audio, global_step: int, sr: int) -> None:
        """audio: [n] or [C, n] float tensor in [-1, 1] (channels are averaged:
        TensorBoard plays mono)."""
        if self.writer is not None:
            if audio.dim() == 2:
                audio = audio.mean(0)
            self.writer.add_audio(tag, audio.clamp(-1, 1).cpu(), global_step, sample_rate=sr)

    def text(self, tag: str, text: str) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text)

    # -- progress -----------------------------------------------------------------------
    def start_stage(self, name: str, start: int, total: int, every: int = 100) -> None:
        if not self.enabled:
            return
        self._name, self._total, self._every = name, total, max(1, every)
        self._t0, self._step0 = time.perf_counter(), start
        if not self.console.is_terminal:
            return
        self._progress = Progress(
            TextColumn(f"[bold]{name}[/bold]"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task(name, total=total, completed=start, rate="", losses="")
        self._progress.start()

    def step(self, step: int, losses: dict[str, float]) -> None:
        """Advance the display to ``step`` (steps done) with the latest losses
        (the runner brings them to the host at log steps only, so between log
        steps the display shows the last logged values)."""
        if not self.enabled:
            return
        rate = self.steps_per_second(step)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in losses.items())
        if self._progress is not None:
            self._progress.update(self._task, completed=step, rate=f"{rate:.2f} steps/s", losses=shown)
        elif step % self._every == 0 or step == self._total:
            eta_text = duration((self._total - step) / rate) if rate > 0 else "?"
            self.console.print(
                f"{self._name} step {step}/{self._total}  {rate:.2f} steps/s  ETA {eta_text}  {shown}",
                highlight=False, soft_wrap=True,
            )

    def steps_per_second(self, step: int) -> float:
        elapsed = time.perf_counter() - self._t0
        return (step - self._step0) / elapsed if elapsed > 0 else 0.0

    def end_stage(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        self.end_stage()
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
