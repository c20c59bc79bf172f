"""Training data: an LMDB dataset -> random crops of ``n_signal`` samples.

Reads datasets written by ``ravedata prep`` and by acids-rave's ``rave
preprocess`` (same layout: ``data.mdb`` + ``metadata.yaml`` with ``channels``
(and ``sr`` from prep), values are udls ``AudioExample`` messages with an int16
"waveform" buffer [channels, n] stored channel after channel), through
:func:`rave_data.dataset.reader.open_dataset`, which infers what acids-rave's
metadata lacks.

Determinism (why the sampler yields tuples): every item drawn is identified
by (example index, epoch, position in the epoch), and all its randomness (the
crop start, the phase mangle, dequantisation noise, the augmentation chain)
comes from a generator seeded by ``(seed, epoch, global position)`` (the
position in the epoch's order over all ranks). The data a step
sees therefore depends neither on the number of worker processes nor on
whether the run was interrupted: resuming at a :class:`DataPosition` replays
exactly the batches an uninterrupted run would have drawn.

The split is deterministic too: a fixed permutation (seed 42, as the
reference) of the example indices; the validation set is ``val_fraction`` of
the examples (at least 1, at most ``val_max``).

Distributed-ready: :class:`ResumableBatchSampler` takes ``rank`` and
``world_size`` and gives each rank a disjoint slice of every epoch, the way
``DistributedSampler`` does.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from rave_model.config import Config

SPLIT_SEED = 42  # the reference's split seed: the same split across runs


class DatasetError(ValueError):
    """A dataset that cannot train this preset; the message says what to do."""


@dataclass
class DataPosition:
    """Where the training data stream stands: the epoch and the number of
    examples of that epoch already consumed (by this rank). Saved in every
    checkpoint so a resumed run sees exactly the batches an uninterrupted run
    would have seen."""

    epoch: int = 0
    offset: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    @classmethod
    def from_dict(cls, d: Mapping[str, int] | None) -> DataPosition:
        d = d or {}
        return cls(int(d.get("epoch", 0)), int(d.get("offset", 0)))


# -- reading examples ------------------------------------------------------------------


class ExampleSource:
    """Random access to int16 examples [channels, n] of an LMDB dataset,
    through rave_data's reader (``open_dataset``), which infers what an
    acids-rave ``metadata.yaml`` lacks and is fork-safe for DataLoader workers.
    """

    def __init__(self, path: Path | str) -> None:
        from rave_data.dataset.reader import DatasetError as ReaderError
        from rave_data.dataset.reader import open_dataset

        self.path = Path(path)
        if not (self.path / "data.mdb").is_file():
            raise DatasetError(f"{self.path}: no data.mdb here (make a dataset with `ravedata prep IN {self.path}`)")
        try:
            self.dataset = open_dataset(self.path)
            n = len(self.dataset)
        except (ReaderError, ValueError, OSError) as exc:
            raise DatasetError(str(exc)) from None
        if self.dataset.metadata.get("lazy"):
            raise DatasetError(
                f"{self.path}: a lazy acids-rave dataset (audio left in the source files) is not supported; "
                f"prepare it with `ravedata prep` or acids-rave's preprocess without --lazy"
            )
        if not n:
            raise DatasetError(f"{self.path}: the dataset is empty")
        self.channels: int = int(self.dataset.channels)
        self.sr: int = int(self.dataset.sr or 44100)
        self.example_length: int = int(self.dataset.n_signal)

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, index: int) -> np.ndarray:
        """int16 [channels, n] of example ``index`` (in key order)."""
        try:
            return self.dataset.read(int(index))
        except (ValueError, KeyError) as exc:
            raise DatasetError(f"{self.path}: example {index}: {exc}") from None


def split_indices(n: int, val_fraction: float, val_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, validation) example indices of a dataset of ``n``."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_val = min(max(1, int(round(n * val_fraction))), val_max, n - 1) if n > 1 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# -- transforms --------------------------------------------------------------------------


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """[C, m] -> [C, n]: the first n samples, zero-padded when m < n."""
    return x[:, :n] if x.shape[1] >= n else np.pad(x, ((0, 0), (0, n - x.shape[1])))


def random_crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """[C, m] -> [C, n] at a random start."""
    x = _fit_length(x, n) if x.shape[1] < n else x  # a short last example: pad, never fail mid-run
    start = int(rng.integers(0, x.shape[1] - n + 1))
    return x[:, start : start + n]


def phase_mangle(x: np.ndarray, sr: int, rng: np.random.Generator, min_f: float = 20.0, max_f: float = 2000.0, amp: float = 0.99) -> np.ndarray:
    """All-pass biquad with a random pole frequency (log-uniform in
    [min_f, max_f]), as the reference applies to 80% of crops: it changes the
    phase but not the magnitude spectrum, so the model cannot rely on phase.
    [C, n] float32 -> [C, n] float32.

    Filtered in float64 by scipy's C loop, faster per crop than torchaudio's
    lfilter with the same output to 1e-14 (docs/training.md "Speed"): the loader
    has little time per example on a fast GPU."""
    from scipy.signal import lfilter

    omega = 2 * math.pi * math.exp(rng.uniform(math.log(min_f), math.log(max_f))) / sr
    z0 = amp * complex(math.cos(omega), math.sin(omega))
    a = [1.0, -2 * z0.real, abs(z0) ** 2]
    b = [abs(z0) ** 2, -2 * z0.real, 1.0]
    return lfilter(b, a, x.astype(np.float64), axis=-1).astype(np.float32)


class CropDataset:
    """Map-style dataset over (example index, epoch, position) draws.

    Returns float32 crops [channels, n_signal] in [-1, 1]. ``augment`` is a
    rave_data plan (``plan.sample(rng).apply(x, sr)``) or None.

    With several processes (``rank`` of ``world_size``), a draw's randomness is keyed
    by its place in the epoch's global order (``position * world_size + rank``), so
    ranks at the same step do not crop and augment alike; one process is unchanged.
    """

    def __init__(self, source: ExampleSource, n_signal: int, seed: int, phase_mangle_p: float = 0.8, dequantize: bool = True, augment: Any = None, rank: int = 0, world_size: int = 1) -> None:
        self.rank, self.world_size = rank, world_size
        self.source = source
        self.n_signal = n_signal
        self.seed = seed
        self.phase_mangle_p = phase_mangle_p
        self.dequantize = dequantize
        self.augment = augment

    def __getitem__(self, draw: tuple[int, int, int]) -> tuple[np.ndarray, int, int]:
        index, epoch, position = draw
        rng = np.random.default_rng([self.seed, epoch, position * self.world_size + self.rank])
        x = self.source.read(index)
        x = random_crop(x, self.n_signal, rng).astype(np.float32) / 32767.0
        if self.augment is not None:
            x = self._augment(x, rng)
        if self.phase_mangle_p and rng.random() < self.phase_mangle_p:
            x = phase_mangle(x, self.source.sr, rng)
        if self.dequantize:
            # Blur the int16 grid so the model never learns it: uniform noise of
            # 2^-16, half a quantisation step (the reference's Dequantize(16)).
            x = x + rng.uniform(0.0, 1.0, x.shape).astype(np.float32) / 65536.0
        return np.ascontiguousarray(x, dtype=np.float32), epoch, position

    def _augment(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from rave_data.augment import AugmentError

        try:
            y = self.augment.sample(rng).apply(x, self.source.sr)
        except AugmentError:
            # One failing chain (a plugin bug on one crop) must not end a
            # days-long run: train on this crop unaugmented.
            return x
        # An augmenter may change the length (time stretch): crop or pad back.
        if y.shape[1] >= self.n_signal:
            return y[:, : self.n_signal]
        return np.pad(y, ((0, 0), (0, self.n_signal - y.shape[1])))


class ResumableBatchSampler:
    """Infinite batch sampler: epoch after epoch, a seeded permutation of the
    training examples, this rank's slice, full batches only (drop_last, as the
    reference). Starts at a :class:`DataPosition`; yields lists of draws
    ``(example index, epoch, position)``."""

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int, start: DataPosition, rank: int = 0, world_size: int = 1) -> None:
        self.indices = np.asarray(indices)
        self.batch_size = batch_size
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world_size = world_size
        self.per_rank = math.ceil(len(self.indices) / world_size)
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch < 1:
            raise DatasetError(f"{len(self.indices)} training examples cannot fill one batch of {batch_size} per process")

    def epoch_order(self, epoch: int) -> np.ndarray:
        perm = self.indices[np.random.default_rng([self.seed, 7919, epoch]).permutation(len(self.indices))]
        total = self.per_rank * self.world_size
        perm = np.resize(perm, total)  # pad by wrapping around, like DistributedSampler
        return perm[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch, offset = self.start.epoch, self.start.offset
        while True:
            if offset + self.batch_size > self.batches_per_epoch * self.batch_size:
                epoch, offset = epoch + 1, 0
            order = self.epoch_order(epoch)
            while offset + self.batch_size <= self.batches_per_epoch * self.batch_size:
                yield [(int(order[p]), epoch, p) for p in range(offset, offset + self.batch_size)]
                offset += self.batch_size


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, else the machine's count)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_workers(device: Any, processes: int = 1, cores: int | None = None) -> int:
    """The loader's worker count for ``train.num_workers = -1``.

    On an accelerator the GPU step is fast and the loader must keep up (online
    augmentation costs more per crop than a step): every core but two (the training
    process and its pin-memory thread) is shared among this machine's training
    processes, at most 16 each. On a CPU the training itself uses the cores and a
    step takes a second or more: 2 workers (1 on a machine of 2-3 cores).
    """
    cores = usable_cores() if cores is None else cores
    kind = getattr(device, "type", str(device))
    if kind == "cpu":
        return max(0, min(2, cores // 2))
    return max(1, min(16, (cores - 2) // max(1, processes)))


class _WorkerInit:
    """A DataLoader worker's start: ignore Ctrl-C and SIGTERM, and open its own LMDB handle.

    Ctrl-C reaches the whole process group, and so does a SIGTERM from a scheduler
    or torch's launcher: workers ignore both so the main process can finish its
    step, save and stop them cleanly. A forked worker
    inherits the parent's open LMDB environment when the parent read the dataset
    before the loader started (validation, the PCA, a previous stage's loader),
    and LMDB's documentation forbids using an environment across fork(). The
    worker closes its inherited copy (its own mapping and file descriptor; the
    parent's stay open) and the next read opens a fresh one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, worker_id: int) -> None:
        import signal

        from rave_data.dataset.reader import release

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        release(self.path)


def _collate(items: list[tuple[np.ndarray, int, int]]) -> tuple[Any, int, int]:
    import torch

    x = torch.from_numpy(np.stack([it[0] for it in items]))
    return x, items[-1][1], items[-1][2]


class TrainData:
    """The training stream and the validation set of one dataset for one config.

    ``train_batches(position, device)`` yields ([B, C, n_signal] float32 on
    ``device``, position after the batch) forever; ``val_batches(device)``
    yields deterministic [B, C, n_signal] crops (the start of each validation
    example, no augmentation).
    """

    def __init__(self, path: Path | str, cfg: Config, augment: Any = None, rank: int = 0, world_size: int = 1) -> None:
        self.cfg = cfg
        self.source = ExampleSource(path)
        self.rank, self.world_size = rank, world_size
        tc = cfg.train
        self.train_idx, self.val_idx = split_indices(len(self.source), float(tc.val_fraction), int(tc.val_max))
        self.dataset = CropDataset(
            self.source,
            int(cfg.data.n_signal),
            seed=int(tc.seed),
            phase_mangle_p=float(tc.phase_mangle),
            dequantize=bool(tc.dequantize),
            augment=augment,
            rank=rank,
            world_size=world_size,
        )

    @property
    def batch_size(self) -> int:
        return int(self.cfg.train.batch_size)

    def workers(self, device: Any) -> int:
        """Loader worker processes: ``train.num_workers``, or :func:`auto_workers` for -1."""
        n = int(self.cfg.train.num_workers)
        if n >= 0:
            return n
        from rave_model.train.distributed import ranks_from_env

        # The processes of this machine share its cores (several GPUs, one host).
        local = ranks_from_env()[3] if self.world_size > 1 else 1
        return auto_workers(device, min(local, self.world_size))

    def check(self, pca_frames_needed: int = 0, hop: int = 1) -> None:
        """Refuse a dataset that cannot train this config, before any work."""
        cfg, src = self.cfg, self.source
        where = str(src.path)
        if src.sr != int(cfg.data.sr):
            raise DatasetError(
                f"{where}: dataset is {src.sr} Hz but the preset trains at {cfg.data.sr} Hz "
                f"(re-run `ravedata prep --sr {cfg.data.sr}` or leave data.sr unset to follow the dataset)"
            )
        if src.channels != int(cfg.data.channels):
            raise DatasetError(
                f"{where}: dataset has {src.channels} channel(s) but the preset expects {cfg.data.channels} "
                f"(re-run `ravedata prep --channels {cfg.data.channels}` or leave data.channels unset to follow the dataset)"
            )
        if src.example_length < int(cfg.data.n_signal):
            raise DatasetError(
                f"{where}: examples are {src.example_length} samples, shorter than the training crop "
                f"data.n_signal={cfg.data.n_signal} (re-run prep with longer examples or lower data.n_signal)"
            )
        need = self.batch_size * self.world_size + 1
        if len(src) < need:
            raise DatasetError(
                f"{where}: {len(src)} examples is too small for batch size {self.batch_size}: "
                f"need at least {need} (one batch plus one validation example). Add audio, "
                f"augment it (`ravedata prep --augment --variants N`), or lower --set train.batch_size"
            )
        if pca_frames_needed:
            frames = min(len(self.train_idx), int(cfg.train.pca_examples)) * (src.example_length // hop)
            if frames < pca_frames_needed:
                raise DatasetError(
                    f"{where}: the latent PCA needs at least {pca_frames_needed} latent frames "
                    f"(latent size) but the dataset gives {frames}: add audio or lower --set model.latent_size"
                )

    def train_batches(self, position: DataPosition, device: Any) -> Iterator[tuple[torch.Tensor, DataPosition]]:
        from torch.utils.data import DataLoader

        sampler = ResumableBatchSampler(self.train_idx, self.batch_size, int(self.cfg.train.seed), position, self.rank, self.world_size)
        import torch

        workers = self.workers(device)
        # A private generator: the loader draws its workers' base seed from it
        # instead of the global RNG, whose state the checkpoint restores (the
        # model's sampling noise must not depend on when a loader was created).
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=getattr(device, "type", str(device)) == "cuda",
            persistent_workers=False,
            prefetch_factor=2 if workers else None,
            generator=torch.Generator().manual_seed(int(self.cfg.train.seed)),
            worker_init_fn=_WorkerInit(self.source.path),
        )
        per_epoch = sampler.batches_per_epoch * self.batch_size
        for x, epoch, last in loader:
            nxt = DataPosition(epoch, last + 1)
            if nxt.offset >= per_epoch:
                nxt = DataPosition(epoch + 1, 0)
            yield x.to(device, non_blocking=True), nxt

    def val_batches(self, device: Any, limit: int | None = None) -> Iterator[torch.Tensor]:
        import torch

        n = int(self.cfg.data.n_signal)
        idx = self.val_idx[: limit or int(self.cfg.train.val_examples)]
        for i in range(0, len(idx), self.batch_size):
            xs = [_fit_length(self.source.read(int(j)), n).astype(np.float32) / 32767.0 for j in idx[i : i + self.batch_size]]
            yield torch.from_numpy(np.stack(xs)).to(device)

    def examples(self, indices: np.ndarray, device: Any) -> Iterator[torch.Tensor]:
        """Whole examples [1, C, n] (no crop, no augmentation), e.g. for the PCA."""
        import torch

        for j in indices:
            x = self.source.read(int(j)).astype(np.float32) / 32767.0
            yield torch.from_numpy(x)[None].to(device)


def load_augment_plan(path: Path | str | None) -> Any:
    """The rave_data augmentation plan for online augmentation (None without a path)."""
    if path is None:
        return None
    from rave_data.augment import load_plan

    return load_plan(path)
