"""Training on several processes (GPUs, machines) through torch.distributed.

One training process per device, started by torch's elastic launcher: ``torchrun``, or
``ravemodel fit --nproc N`` (:mod:`rave_model.train.launch`), which runs the same
launcher in-process. A process learns its place from the variables the launcher sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``) and joins the group with ``init_method="env://"``.

Everything here degrades to a no-op in a single process (no process group), so the
training loop calls these helpers unconditionally:

- :func:`setup` / :func:`teardown`: the process group (NCCL on GPUs, gloo on CPUs).
- :func:`any_rank`, :func:`reduce_mean`, :func:`broadcast_object`,
  :func:`main_computes`, :func:`require_same`, :func:`broadcast_module`: the few
  collectives a training loop needs.
- :func:`wrap_model`: DistributedDataParallel in one place.
- :func:`rescale_offset`: a data position saved by N processes, for M.

torch is imported inside functions: ``ravemodel --help`` never pays for it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among all processes, its rank on this
    machine, and the torch device it trains on (``"cuda:1"``, ``"cpu"``...)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: str = "cpu"
    backend: str | None = None  # None: no process group (a single process)

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, validates, writes TensorBoard and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_CURRENT = DistContext()


def current() -> DistContext:
    """The context :func:`setup` made (a single-process one before it)."""
    return _CURRENT


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def ranks_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int, int, int]:
    """(rank, world_size, local_rank, local_world_size) from torchrun's variables;
    (0, 1, 0, 1) when they are absent (a plain single-process run)."""
    env = os.environ if environ is None else environ
    world = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local_rank = _env_int(env, "LOCAL_RANK", rank)
    local_world = _env_int(env, "LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not within WORLD_SIZE={world}")
    if not 0 <= local_rank < max(local_world, 1):
        raise ValueError(f"LOCAL_RANK={local_rank} is not within LOCAL_WORLD_SIZE={local_world}")
    return rank, world, local_rank, local_world


def launched(environ: Mapping[str, str] | None = None) -> bool:
    """True in a process started as one of several (by torchrun or ``--nproc``)."""
    return ranks_from_env(environ)[1] > 1


def pick_device(requested: str, local_rank: int, world_size: int) -> str:
    """The device of this process. ``auto`` takes this process's GPU when there is one.

    Several processes on one machine each take the GPU numbered by their local rank,
    as torchrun intends; mps has no multi-process backend, so it is refused for more
    than one process.
    """
    import torch

    req = (requested or "auto").lower()
    if req == "auto":
        if torch.cuda.is_available():
            req = "cuda"
        elif world_size == 1 and torch.backends.mps.is_available():
            req = "mps"
        else:
            req = "cpu"
    if req.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but torch sees no CUDA GPU")
        if world_size > 1 or req == "cuda":
            n = torch.cuda.device_count()
            if local_rank >= n:
                raise ValueError(
                    f"local rank {local_rank} needs GPU {local_rank} but this machine has {n}: "
                    f"start at most {n} processes per machine"
                )
            return f"cuda:{local_rank}"
        return req
    if req == "mps" and world_size > 1:
        raise ValueError("mps supports a single process only: use --nproc 1 or --device cpu")
    if req not in ("cpu", "mps"):
        raise ValueError(f"unknown device {requested!r}: use auto, cpu, cuda or mps")
    return req


def setup(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the process group this process was started into, and pick its device.

    A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) gets a context and no
    process group. NCCL is used when the device is a GPU, gloo otherwise.
    ``timeout_s`` bounds how long a collective waits for a missing peer.
    """
    global _CURRENT
    import datetime

    import torch
    import torch.distributed as dist

    rank, world, local_rank, local_world = ranks_from_env()
    dev = pick_device(device, local_rank, world)
    if world == 1:
        _CURRENT = DistContext(device=dev)
        return _CURRENT
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed: train with one process")
    backend = "nccl" if dev.startswith("cuda") else "gloo"
    if dev.startswith("cuda"):
        # NCCL maps a rank to the current device; set it before the group exists.
        torch.cuda.set_device(torch.device(dev))
    timeout = datetime.timedelta(seconds=timeout_s)
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=timeout)
    _CURRENT = DistContext(rank, world, local_rank, local_world, dev, backend)
    return _CURRENT


def teardown() -> None:
    """Leave the process group (safe to call when there is none)."""
    global _CURRENT
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = DistContext(device=_CURRENT.device)


def _group_active() -> bool:
    if _CURRENT.world_size <= 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _comm_device() -> "torch.device":
    """NCCL collectives need tensors on the GPU; gloo needs them on the CPU."""
    import torch

    return torch.device(_CURRENT.device if _CURRENT.backend == "nccl" else "cpu")


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one.

    The training loop asks this each step for "stop now" (Ctrl-C, a non-finite loss,
    a step limit): all ranks then leave at the same step, so none is left waiting in
    a collective for a peer that already stopped.
    """
    if not _group_active():
        return bool(flag)
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def reduce_mean(metrics: Mapping[str, float]) -> dict[str, float]:
    """The mean over all ranks of each metric (for logging what the whole batch did,
    and so that a non-finite loss on one rank is seen by all of them at once).

    Every rank must pass the same keys; they travel sorted so the order agrees, and
    come back in the caller's order.
    """
    if not _group_active() or not metrics:
        return {k: float(v) for k, v in metrics.items()}
    import torch
    import torch.distributed as dist

    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= _CURRENT.world_size
    mean = dict(zip(keys, t.tolist()))
    return {k: mean[k] for k in metrics}


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (a picklable value: a path, a dict, a number)."""
    if not _group_active():
        return obj
    import torch.distributed as dist

    box = [obj if _CURRENT.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def main_computes(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 alone; its result, or the exception it raised, on every rank.

    For what only rank 0 can or should do, such as reading the run folder (on a
    cluster it may exist on rank 0's machine only): all ranks then go on with the
    same value, or all fail with the same error instead of waiting for rank 0.
    """
    if not _group_active():
        return fn()
    outcome: tuple[bool, Any] = (True, None)
    if _CURRENT.is_main:
        try:
            outcome = (True, fn())
        except Exception as e:  # travels to the other ranks, then raised everywhere
            outcome = (False, e)
    ok, value = broadcast_object(outcome)
    if not ok:
        raise value
    return value


def require_same(what: str, value: Any) -> None:
    """Refuse to go on when the ranks disagree on ``value``, naming the first that does.

    For what each machine brings itself, above all the dataset: every machine must
    hold the same one, or the ranks' shares would silently not fit together.
    """
    if not _group_active():
        return
    import torch.distributed as dist

    values: list[Any] = [None] * _CURRENT.world_size
    dist.all_gather_object(values, value)
    for rank, other in enumerate(values):
        if other != values[0]:
            raise ValueError(
                f"{what} differs between processes: rank 0 has {values[0]}, rank {rank} has {other}; "
                f"every machine needs the same copy"
            )


def broadcast_module(module: "torch.nn.Module", src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into ``module`` on every rank.

    For state computed on rank 0 alone after a stage (e.g. the PCA buffers), before
    the next stage trains from it.
    """
    if not _group_active():
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if _CURRENT.backend == "nccl" or t.device.type == "cpu":
                dist.broadcast(t.data, src=src)
            else:
                tmp = t.data.to(_comm_device())
                dist.broadcast(tmp, src=src)
                t.data.copy_(tmp)


def wrap_model(module: "torch.nn.Module") -> "torch.nn.Module":
    """``module`` in DistributedDataParallel when there are several processes.

    DDP copies rank 0's parameters and buffers to every rank when it wraps, and
    averages gradients across ranks during ``backward()``: every rank then takes the
    same optimizer step and the weights stay identical. Only parameters that need a
    gradient at wrapping time are synchronised, so freeze first, then wrap. Call the
    wrapper's ``forward`` once per backward (wrap a module whose forward computes the
    loss when a step calls several sub-modules), and call the plain module where no
    gradient is wanted.

    ``static_graph``: RAVE has parameters a stage does not use (the v1 noise branch
    sits idle through stage 1), which plain DDP would wait for forever. A static graph
    lets DDP find them in the first step and skip them from then on, where
    ``find_unused_parameters`` would walk the autograd graph at every step (and warn
    when a model uses all of them). Each stage wraps its own module, so each graph is
    fixed for the life of its wrapper.
    """
    if not _group_active():
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not any(p.requires_grad for p in module.parameters()):
        return module  # nothing to synchronise (e.g. a frozen model used for inference)
    dev = _CURRENT.device
    ids = [int(dev.split(":")[1])] if dev.startswith("cuda:") else None
    return DDP(module, device_ids=ids, static_graph=True)


def rescale_offset(offset: int, saved_world_size: int, world_size: int, batch_size: int) -> int:
    """A data position saved by ``saved_world_size`` processes, for ``world_size``.

    The training sampler (:class:`rave_model.data.ResumableBatchSampler`) gives rank r
    the positions r, r+W, r+2W... of an epoch order that does not depend on W, and a
    checkpoint stores how far one rank got in its slice (``offset``). All ranks
    together have then used the first ``offset * saved_world_size`` positions; with
    ``world_size`` ranks the same point is that divided by ``world_size``, rounded down
    to whole batches: a few examples may be seen twice, none is skipped.
    """
    if saved_world_size == world_size:
        return offset
    consumed = offset * saved_world_size
    return consumed // world_size // batch_size * batch_size

