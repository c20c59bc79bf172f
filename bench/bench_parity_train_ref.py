"""Reconstruct clips with an acids-rave 2.x training checkpoint (run in acids-rave's venv).

    REFVENV/bin/python bench/bench_parity_train_ref.py RUN_DIR CKPT IN.npy [IN.npy ...] --out OUT_DIR

A helper of bench_parity_train.py: it imports acids-rave (``rave``), so it runs
with the reference's own interpreter, never in ours. The model is rebuilt from
the run's ``config.gin`` (the operative config ``rave train`` wrote) and the
checkpoint's ``state_dict``, in eval mode; each input (float32 ``[n]``, n a
multiple of the model's hop) is encoded, the latent mean taken (the first half
of the encoder's output channels, as acids-rave's own validation does), decoded
with the torch seed 0 (the v2 noise branch draws noise), and written as
``OUT_DIR/<input name>`` (float32 ``[n]``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import gin
import numpy as np
import torch

import rave  # noqa: F401  (registers the gin configurables)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("inputs", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    gin.parse_config_file(str(a.run / "config.gin"))
    model = rave.RAVE(n_channels=1)
    state = torch.load(a.ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict(state)
    model.eval()
    a.out.mkdir(parents=True, exist_ok=True)
    for path in a.inputs:
        x = torch.from_numpy(np.load(path).astype(np.float32))[None, None]
        torch.manual_seed(0)
        with torch.no_grad():
            params = model.encode(x)
            mean = torch.split(params, params.shape[1] // 2, 1)[0]
            y = model.decode(mean)
        np.save(a.out / path.name, y[0, 0, : x.shape[-1]].numpy().astype(np.float32))
        print(f"{path.name}: {x.shape[-1]} samples -> latent {tuple(mean.shape)}")


if __name__ == "__main__":
    main()
