#!/usr/bin/env bash
# A lent GPU's work in one command (the device tool runs it in a copy of the repo). Each step
# has its own time limit, so that a slow one leaves the others their turn; outputs land in
# $OUT. STEPS picks the steps (default: tests 8bit conv):
#   tests        the CUDA tests (tests/test_devices.py)
#   trace        where the exact coder's CPU and CUDA files part ways (exact_device_trace.py)
#   determinism  the CUDA resume test again with torch's deterministic algorithms
#   8bit         the hvae-8bit compression model trained on the GPU; its weights come back
#   conv         benchmarks/mnist_nll.py for hvae-conv on the GPU, its epochs fitted to
#                CONV_TRAIN_S seconds and its K=5000 test images to what is left of
#                CONV_TOTAL_S; its weights come back
#   evalrun      benchmarks/mnist_nll.py --run RUN: K=5000 on as many test images as fit in
#                EVAL_TOTAL_S of a run trained elsewhere (carry its folder: a model trained
#                within the CPU's two hours, evaluated where K=5000 on 10,000 images takes
#                minutes instead of days)
#   codebinary   benchmarks/compression.py on CUDA: the binarized test set coded by RUN with
#                plain and importance-weighted bits-back (PARTICLES, default 16), every file
#                decoded and compared (the exact coder writes the same bytes on a CPU)
#   fashion      the hvae preset trained on Fashion-MNIST (the anomaly benchmark's
#                Fashion -> MNIST direction); its weights come back
#   VAEKIT_DATA=.gpudata STEPS="tests 8bit" bash benchmarks/gpu_session.sh
set -u
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}
STEPS=${STEPS:-tests 8bit conv}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"

export_weights() {  # run folder, name: the weights (no optimizer state), in parts of 15 MB
    python3 - "$1" "$OUT/$2.safetensors" <<'PY'
import sys
from pathlib import Path
from vaekit.checkpoint import TrainingState, load_checkpoint, save_checkpoint
run, out = Path(sys.argv[1]), Path(sys.argv[2])
model, cfg, state = load_checkpoint(run, with_state=True)
save_checkpoint(out, model, cfg, TrainingState(state.epoch, state.step))
out.with_suffix(".metrics.jsonl").write_text((run / "metrics.jsonl").read_text())
PY
    split -b 15M "$OUT/$2.safetensors" "$OUT/$2.part." && rm "$OUT/$2.safetensors"
}

train_timed() {  # name, seconds, vaekit train arguments...
    local name=$1 limit=$2 t0
    shift 2
    t0=$(date +%s)
    timeout "$limit" python3 -m vaekit train --out "/tmp/$name" "$@" > "$OUT/$name.txt" 2>&1
    echo "$name train exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/$name.txt"
    export_weights "/tmp/$name" "$name"
}

for step in $STEPS; do
    case $step in
    tests)
        timeout 80 python3 -m pytest -q -p no:cacheprovider tests/test_devices.py 2>&1 \
            | tee "$OUT/cuda_tests.txt" | tail -15 ;;
    trace)
        for case in "vae 8bit" "hvae 8bit" "vae static-binary"; do
            set -- $case
            timeout 60 python3 benchmarks/exact_device_trace.py --family "$1" --pixels "$2" 2>&1
        done | tee "$OUT/exact_trace.txt" ;;
    determinism)
        CUBLAS_WORKSPACE_CONFIG=:4096:8 timeout 60 python3 -c "
import sys, torch, pytest
torch.use_deterministic_algorithms(True)
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/test_devices.py', '-k', 'resume']))
" 2>&1 | tail -8 | tee "$OUT/determinism.txt" ;;
    8bit)
        train_timed hvae8bit "${EIGHTBIT_S:-220}" --preset hvae-8bit --set train.device=cuda \
            --set train.epochs="${EIGHTBIT_EPOCHS:-150}" ;;
    fashion)
        train_timed hvae-fashion "${FASHION_S:-190}" --preset hvae --data fashion-mnist \
            --set train.device=cuda --set train.epochs="${FASHION_EPOCHS:-60}" ;;
    conv)
        # training fitted to CONV_TRAIN_S, K=5000 on as many test images as fit in what is
        # left of CONV_TOTAL_S; DECODE_BATCH latents decoded at once (the H200's memory).
        # On an H200 (session 13) all 10,000 test images took 352 s and an epoch about 6 s
        # of wall time: the defaults fit about 25 epochs and the whole test set into one
        # 600-s device call
        timeout "${CONV_S:-585}" python3 benchmarks/mnist_nll.py --presets hvae-conv \
            --device cuda --threads 8 --train-seconds "${CONV_TRAIN_S:-180}" --total-seconds \
            "${CONV_TOTAL_S:-570}" --decode-batch "${DECODE_BATCH:-16384}" --out /tmp/bench 2>&1 \
            | tr '\r' '\n' \
            | grep -v 'step/s\|img/s]' > "$OUT/hvae_conv.txt"
        echo "hvae-conv exit ${PIPESTATUS[0]}" >> "$OUT/hvae_conv.txt"
        tail -1 benchmarks/results/mnist_nll.jsonl > "$OUT/mnist_nll_row.json"
        run=$(ls -d /tmp/bench/mnist-hvae-conv-* | grep -v probe | tail -1)
        [ -n "$run" ] && export_weights "$run" hvae-conv ;;
    evalrun)
        timeout "${EVAL_S:-585}" python3 benchmarks/mnist_nll.py --run "$RUN" --device cuda \
            --threads 8 --total-seconds "${EVAL_TOTAL_S:-570}" \
            --decode-batch "${DECODE_BATCH:-16384}" 2>&1 | tr '\r' '\n' \
            | grep -v 'img/s]\|s/img]' > "$OUT/evalrun.txt"
        echo "evalrun exit ${PIPESTATUS[0]}" >> "$OUT/evalrun.txt"
        tail -1 benchmarks/results/mnist_nll.jsonl > "$OUT/evalrun_row.json" ;;
    codebinary)
        timeout "${CODE_S:-400}" python3 benchmarks/compression.py --kinds binary \
            --model-binary "$RUN" --device cuda --threads 8 --no-generic --ideal-n 0 \
            --particles ${PARTICLES:-16} > "$OUT/codebinary.txt" 2>&1
        echo "codebinary exit $?" >> "$OUT/codebinary.txt"
        tail -1 benchmarks/results/compression.jsonl > "$OUT/codebinary_row.json" ;;
    esac
done
ls -la "$OUT"
