"""Make a venv-like folder that runs acids-rave 2.3.1 with an existing interpreter.

    python3 bench/bench_parity_train_shim.py REFDIR --site DIR [--site DIR ...] [--python python3]

For machines where no venv can be made with acids-rave's pinned versions (no
network, only wheels carried over), but where an interpreter already holds torch,
torchaudio, numpy >= 2 and scipy >= 1.13: the packages acids-rave needs beyond
those (acids-rave, pytorch-lightning 1.9.0, gin-config, udls, cached-conv,
librosa, lmdb, GPUtil, ...) are installed with ``pip install --target DIR``, and
this writes

- ``REFDIR/bin/python``: that interpreter with ``DIR``s and ``REFDIR/shim`` first
  on ``PYTHONPATH``;
- ``REFDIR/bin/rave``: acids-rave's ``rave`` command through it;
- ``REFDIR/shim/sitecustomize.py``: two names acids-rave's pins still had and
  newer releases removed, restored as aliases of the same objects:
  ``numpy.Inf`` (= ``numpy.inf``; pytorch-lightning 1.9's ModelCheckpoint) and
  ``scipy.signal.kaiser`` (= ``scipy.signal.windows.kaiser``; rave/pqmf.py); and
  ``scipy.signal.kaiserord`` given a one-element array (rave/pqmf.py's filter
  search does that) takes its value, the conversion numpy 1.26 made and numpy 2
  refuses; ``scipy.signal.firwin(..., nyq=F)`` (removed in scipy 1.14) is
  ``firwin(..., fs=2F)``. No computation changes.

bench_parity_train.py then takes ``--ref-venv REFDIR`` as it would a real venv.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

SITECUSTOMIZE = '''\
# Aliases for names acids-rave 2.3.1's pinned numpy 1.26 / scipy 1.10 had (see bench_parity_train_shim.py).
import numpy

if not hasattr(numpy, "Inf"):
    numpy.Inf = numpy.inf

import scipy.signal
import scipy.signal.windows

if not hasattr(scipy.signal, "kaiser"):
    scipy.signal.kaiser = scipy.signal.windows.kaiser

# rave/pqmf.py's fmin search hands kaiserord a one-element array, which numpy 2 no
# longer turns into a Python scalar: pass its value, as numpy 1.26 did.
_kaiserord = scipy.signal.kaiserord


def kaiserord(ripple, width):
    return _kaiserord(ripple, numpy.asarray(width).item() if numpy.size(width) == 1 else width)


scipy.signal.kaiserord = kaiserord

# firwin's nyq= (removed in scipy 1.14) is fs=2*nyq.
_firwin = scipy.signal.firwin


def firwin(*args, nyq=None, **kwargs):
    if nyq is not None:
        kwargs["fs"] = 2 * nyq
    return _firwin(*args, **kwargs)


scipy.signal.firwin = firwin
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("refdir", type=Path)
    ap.add_argument("--site", type=Path, action="append", required=True, help="a pip --target folder (repeatable)")
    ap.add_argument("--python", default="python3", help="the interpreter that holds torch (default: python3)")
    a = ap.parse_args()
    ref = a.refdir.resolve()
    (ref / "bin").mkdir(parents=True, exist_ok=True)
    (ref / "shim").mkdir(exist_ok=True)
    (ref / "shim" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = ":".join(str(p.resolve()) for p in [*a.site, ref / "shim"])
    py = ref / "bin" / "python"
    py.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(path)} exec {shlex.quote(a.python)} \"$@\"\n")
    rave = ref / "bin" / "rave"
    rave.write_text(
        f"#!/bin/sh\nexec {shlex.quote(str(py))} -c "
        "'import sys; from scripts.main_cli import main; sys.argv[0] = \"rave\"; sys.exit(main())' \"$@\"\n"
    )
    for f in (py, rave):
        f.chmod(0o755)
    print(f"{ref}: bin/python, bin/rave (PYTHONPATH={path})")


if __name__ == "__main__":
    main()
