#!/usr/bin/env bash
# End-to-end demo on generated audio: set-up, prep (with augmentation), audit,
# train the `tiny` preset through every stage, export for nn~, listen.
# Usage: bash examples/demo.sh [WORKDIR]   (default: ./demo)
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
export PATH="$PWD/.venv/bin:$PATH"
W=${1:-demo}
rm -rf "$W"
mkdir -p "$W"

echo "== 1. generate demo recordings (mixed formats, rates, channels, silences)"
python examples/make_demo_audio.py "$W/in"
ravedata duration "$W/in"

echo "== 2. prepare a training set (48 kHz mono, trimmed, normalised, augmented)"
ravedata plugins
ravedata prep "$W/in" "$W/out" --sr 48000 --augment --variants 2 --seed 7
ravedata duration "$W/out"

echo "== 3. train the tiny preset through all stages (seconds on a CPU)"
ravemodel fit "$W/out" --preset tiny --run "$W/run"

echo "== 4. export a streaming TorchScript model for nn~ and listen to it"
ravemodel export "$W/run" -o "$W/model.ts"
first=$(find "$W/in" -name '*.wav' | sort | head -n 1)
ravemodel reconstruct "$W/model.ts" "$first" -o "$W/reconstruction.wav"
ravemodel generate "$W/run" --seconds 5 -o "$W/generated.wav" --seed 1
echo "demo done: see $W/"
