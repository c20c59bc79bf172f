#!/usr/bin/env bash
# A short end-to-end check of the training code on a CUDA machine (the H200 device
# machine of this workplace, or any Linux box with a GPU and torch installed):
# the CUDA tests, then prep -> fit (v2_small, bf16, stage 1 into stage 2) -> resume
# -> export -> the export on the GPU. Wheels for packages the machine lacks may be
# carried in .whl/ (see /work/.library/device/README.md). Prints a line per step.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${W:-/tmp/gpucheck}
PY=${PY:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
# Entry points (the built-in augmenters) need the project's metadata.
$PY -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null
export PYTHONUNBUFFERED=1
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
echo "== CUDA tests"
$PY -m pytest -q -p no:cacheprovider tests/rave_model/test_export_state.py tests/rave_model/test_precision.py -k "cuda or gpu" 2>&1 | tail -3
rm -rf "$W"; mkdir -p "$W"
echo "== prep"
$PY examples/make_demo_audio.py "$W/in" >/dev/null
$PY -m rave_data prep "$W/in" "$W/out" --sr 44100 --augment --variants 1 --seed 7 -q
echo "== fit v2_small bf16: 300 steps (stage 1 = 200), then resume for 100"
SETS=(--set train.vae_steps=200 --set train.adversarial_steps=200 --set prior.steps=0 --set train.batch_size=8
      --set train.val_every=150 --set train.log_every=50 --set data.n_signal=65536)
t0=$(date +%s.%N)
$PY -m rave_model fit "$W/out" --preset v2_small --run "$W/run" --device cuda --precision bf16 --max-steps 300 "${SETS[@]}"
t1=$(date +%s.%N)
$PY -m rave_model fit "$W/out" --preset v2_small --run "$W/run" --device cuda --precision bf16 "${SETS[@]}"
t2=$(date +%s.%N)
echo "first call (300 steps incl. start-up): $($PY -c "print(round($t1 - $t0, 1))") s; resume to the end: $($PY -c "print(round($t2 - $t1, 1))") s"
$PY - "$W/run" <<'PYEOF'
import sys, torch
from pathlib import Path
from rave_model.train import checkpoint as ck
c = ck.load(Path(sys.argv[1]) / "checkpoints" / "last.ckpt")
print("checkpoint:", c.stage, c.step, "done", c.done, "provenance torch", c.provenance.torch)
PYEOF
echo "== export and run on the GPU"
$PY -m rave_model export "$W/run" -o "$W/model.ts"
$PY -m rave_model export "$W/run" -o "$W/offline.ts" --offline
$PY - "$W" <<'PYEOF'
import sys, torch
w = sys.argv[1]
x = torch.randn(1, 1, 2 ** 16)
for name in ("model.ts", "offline.ts"):
    m = torch.jit.load(f"{w}/{name}")
    with torch.no_grad():
        y_cpu = m.forward(x)
    m2 = torch.jit.load(f"{w}/{name}").to("cuda")
    with torch.no_grad():
        y_gpu = m2.forward(x.cuda()).cpu()
    err = (y_cpu - y_gpu).abs().max().item() / max(y_cpu.abs().max().item(), 1e-9)
    print(f"{name}: output {tuple(y_gpu.shape)}, GPU vs CPU relative max difference {err:.2e}")
PYEOF
echo "gpu check done"
