"""A convolutional preset's training step on this CPU, by precision and memory layout, in one run.

    python benchmarks/conv_layout.py [--preset hvae-conv] [--set model.channels=32] [--batch 256]
                                     [--steps 4] [--compile]

Times the step `vaekit.train` runs (the ELBO objective's forward and backward on a batch of
binarized MNIST-shaped images; the optimizer's update is the same in every case and left out)
for float32 and bf16 autocast, each with contiguous (NCHW) and channels-last weights and
inputs; `--compile` adds channels-last steps under torch.compile (`train.compile`), whose
compilation happens in the warm-up and is not timed. The cases alternate, round after round,
so that a shared machine's drift falls on all of them alike; the median round is reported.
Appends one row to benchmarks/results/conv_layout.jsonl (images/s per case and the ratios
that matter: bf16 against float32, channels-last against contiguous, compiled against not).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402
from vaekit import build_model, preset  # noqa: E402
from vaekit.config import apply_overrides  # noqa: E402
from vaekit.device import cpu_has_native_bf16  # noqa: E402
from vaekit.objectives import TrainingObjective  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="hvae-conv")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4, help="steps timed per case and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile's step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = apply_overrides(preset(args.preset), args.overrides)
    x = (torch.rand(args.batch, *cfg.model.image_shape) > 0.8).float()
    cases = {}
    for layout in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        model = build_model(cfg.model)
        inputs = x
        if layout == "channels_last":
            model.to(memory_format=torch.channels_last)
            inputs = x.contiguous(memory_format=torch.channels_last)
        step = TrainingObjective(model)
        for precision in ("float32", "bf16"):
            cases[f"{precision}/{layout}"] = (step, inputs, precision == "bf16")
            if args.compile and layout == "channels_last":
                # as training compiles it: the objective module, gradients through the original
                compiled = torch.compile(step)
                cases[f"{precision}/{layout}/compiled"] = (compiled, inputs, precision == "bf16")

    def run(case, n):
        step, inputs, bf16 = case
        t0 = time.perf_counter()
        for _ in range(n):
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                loss = step(inputs)[0]
            loss.backward()
            step.zero_grad(set_to_none=True)
        return args.batch * n / (time.perf_counter() - t0)

    for name, case in cases.items():  # warm-up: oneDNN builds its kernels on first use
        t0 = time.perf_counter()
        run(case, 2)
        print(f"{name:32s} warm-up {time.perf_counter() - t0:6.1f} s", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, case in cases.items():
            rates[name].append(run(case, args.steps))
    med = {name: statistics.median(r) for name, r in rates.items()}
    for name, r in med.items():
        print(f"{name:32s} {r:7.1f} images/s")
    row = {
        "preset": args.preset,
        "overrides": args.overrides,
        "model": cfg.to_dict()["model"],
        "batch": args.batch,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": args.threads,
        "native_bf16": cpu_has_native_bf16(),
        "images_per_s": med,
        "rounds_images_per_s": rates,
        "bf16_over_float32": {
            lay: med[f"bf16/{lay}"] / med[f"float32/{lay}"]
            for lay in ("contiguous", "channels_last")
        },
        "channels_last_over_contiguous": {
            p: med[f"{p}/channels_last"] / med[f"{p}/contiguous"] for p in ("float32", "bf16")
        },
        "compiled_over_eager": {
            p: med[f"{p}/channels_last/compiled"] / med[f"{p}/channels_last"]
            for p in ("float32", "bf16")
            if f"{p}/channels_last/compiled" in med
        },
        "machine": machine(),
        "command": command(),
        "date": now(),
    }
    print(f"appended to {append_result('conv_layout', row)}")


if __name__ == "__main__":
    main()
