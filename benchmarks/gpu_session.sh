#!/usr/bin/env bash
# One lent-GPU session in one command (the device tool runs it in a copy of the repo):
# the CUDA tests, the hvae-8bit compression model trained on the GPU (its weights come back
# for CPU coding), and the hvae-conv likelihood benchmark. Each step has its own time limit,
# so that a slow one leaves the others their turn. Outputs land in $OUT.
#   VAEKIT_DATA=.gpudata bash benchmarks/gpu_session.sh
set -u
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"

timeout 80 python3 -m pytest -q -p no:cacheprovider tests/test_devices.py 2>&1 | tail -15 | tee "$OUT/cuda_tests.txt"

run=/tmp/hvae-8bit
t0=$(date +%s)
timeout "${EIGHTBIT_S:-220}" python3 -m vaekit train --preset hvae-8bit --out "$run" \
    --set train.device=cuda --set train.epochs="${EIGHTBIT_EPOCHS:-150}" \
    > "$OUT/hvae8bit_train.txt" 2>&1
echo "hvae-8bit train exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/hvae8bit_train.txt"
python3 - "$run" "$OUT" <<'PY'
import sys
from pathlib import Path
from vaekit.checkpoint import TrainingState, load_checkpoint, save_checkpoint
run, out = Path(sys.argv[1]), Path(sys.argv[2])
model, cfg, state = load_checkpoint(run, with_state=True)
save_checkpoint(out / "hvae8bit.safetensors", model, cfg, TrainingState(state.epoch, state.step))
(out / "hvae8bit_metrics.jsonl").write_text((run / "metrics.jsonl").read_text())
PY
split -b 15M "$OUT/hvae8bit.safetensors" "$OUT/hvae8bit.part." && rm "$OUT/hvae8bit.safetensors"

timeout "${CONV_S:-250}" python3 benchmarks/mnist_nll.py --presets hvae-conv --device cuda \
    --epochs "${CONV_EPOCHS:-40}" --out /tmp/bench > "$OUT/hvae_conv.txt" 2>&1
echo "hvae-conv exit $?" >> "$OUT/hvae_conv.txt"
cp benchmarks/results/mnist_nll.jsonl "$OUT/" 2>/dev/null
ls -la "$OUT"
