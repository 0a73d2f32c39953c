#!/bin/sh
# `make demo`: every use of one trained model, in a few minutes on 2 cores. These are the
# README's quickstart commands, line for line (tests/test_readme.py checks both and runs them
# on a small data set). VAEKIT_DATA names the folder holding mnist/ and fashion-mnist/.
set -eu
: "${VAEKIT_DATA:?set VAEKIT_DATA to the folder that holds mnist/ and fashion-mnist/}"
rm -rf runs/demo

vaekit train --preset demo-8bit --out runs/demo
vaekit evaluate runs/demo --k 20
vaekit sample runs/demo --out runs/demo/samples.png
vaekit reconstruct runs/demo --out runs/demo/reconstructions.png
vaekit compress runs/demo $VAEKIT_DATA/mnist/t10k-images-idx3-ubyte.gz -o runs/demo/test.vkz --bits-back-only
vaekit decompress runs/demo runs/demo/test.vkz -o runs/demo/t10k-images-idx3-ubyte.gz
zcmp $VAEKIT_DATA/mnist/t10k-images-idx3-ubyte.gz runs/demo/t10k-images-idx3-ubyte.gz
vaekit fit-scores runs/demo
vaekit detect runs/demo $VAEKIT_DATA/fashion-mnist/t10k-images-idx3-ubyte.gz --calibrate $VAEKIT_DATA/mnist/t10k-images-idx3-ubyte.gz --limit 1000 --out runs/demo/detections
vaekit report runs/demo

cat <<'DONE'

the demo's outputs, in runs/demo/:
  model        checkpoint.safetensors, config.json, metrics.jsonl
  generation   samples.png, reconstructions.png
  compression  test.vkz (the MNIST test set, bits-back coded); t10k-images-idx3-ubyte.gz
               (decoded from it: the original IDX contents byte for byte, checked by zcmp)
  anomalies    score_reference.json, intensity.* (fit-scores); detections/: Fashion-MNIST
               images scored against a threshold set on MNIST (flagged.csv, scores.csv, PNGs)
  report       report.html (open it in a browser)
DONE
