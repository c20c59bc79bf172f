"""``ravedata prep``: a folder of recordings -> a RAVE training set.

The flow, one module a stage:

- :mod:`~rave_data.prep.settings`: what shapes the output (:class:`PrepSettings`,
  whose defaults are the command's);
- :mod:`~rave_data.prep.driver`: :func:`prep`, which locks ``out/``
  (:mod:`~rave_data.prep.lock`), decides what to (re)do from the committed
  state (:mod:`~rave_data.prep.state`, :mod:`~rave_data.prep.fingerprint`),
  hands :class:`~rave_data.prep.job.SourceJob` s to worker processes
  (:mod:`~rave_data.prep.pool`) and commits their results in a fixed order;
- :mod:`~rave_data.prep.worker`: one source from decoding to the processed
  audio and its encoded examples (:mod:`~rave_data.prep.spool`,
  :mod:`~rave_data.prep.blocks`), plus augmented variants;
- :mod:`~rave_data.prep.pack`: ``--pack``, short files and tails into whole examples;
- :mod:`~rave_data.prep.report`: ``report.json`` and the summary;
  :mod:`~rave_data.prep.progress`: the progress callbacks and bar.

Importing this package imports only the settings: the command line reads
its option defaults from them and must start fast. :func:`prep` and
:class:`PrepError` load the driver on first use.
"""
from __future__ import annotations

from typing import Any

from rave_data.prep.settings import PrepSettings, SettingsError

__all__ = ["PrepError", "PrepSettings", "SettingsError", "prep"]


def __getattr__(name: str) -> Any:
    if name in ("prep", "PrepError"):
        from rave_data.prep import driver

        return getattr(driver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
