"""Exit statuses and one-line errors of the ``ravemodel`` commands other than ``fit``
(docs/cli.md):

- 2, bad usage or input: a missing or invalid run folder, checkpoint, model, audio or
  latent file, a bad option value (``ValueError``, which :class:`ListenError` and
  :class:`ImportFailure` are, and ``FileNotFoundError``);
- 1, the command ran but failed: an output it could not write (other ``OSError``), an
  error of the computation itself (``RuntimeError`` such as out of memory);
- 130, interrupted (Ctrl-C); nothing half-written is left, every output being
  written to a temporary name and renamed.

Each error is one line on stderr, ``ravemodel COMMAND: error: ...``, whose message
names the file and the reason; no traceback.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn, TypeVar

import typer

BAD_INPUT = 2
FAILED = 1
INTERRUPTED = 130

T = TypeVar("T")


def fail(command: str, message: str, code: int = BAD_INPUT) -> NoReturn:
    """Print ``ravemodel COMMAND: error: MESSAGE`` (its first line) on stderr and exit with
    ``code``."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    typer.echo(f"ravemodel {command}: error: {lines[0] if lines else 'failed'}", err=True)
    raise typer.Exit(code)


def guarded(command: str, work: Callable[[], T]) -> T:
    """``work()``, its errors turned into one line and the exit status above."""
    try:
        return work()
    except (ValueError, FileNotFoundError) as exc:
        fail(command, str(exc), BAD_INPUT)
    except OSError as exc:  # an unwritable output folder, a full disk
        fail(command, str(exc), FAILED)
    except (RuntimeError, MemoryError) as exc:
        fail(command, f"{exc.__class__.__name__}: {exc}", FAILED)
    except KeyboardInterrupt:
        typer.echo(f"ravemodel {command}: interrupted", err=True)
        raise typer.Exit(INTERRUPTED) from None
