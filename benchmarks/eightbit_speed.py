"""Where the time of an 8-bit training step goes: images/s of the `mlp` network under the
8-bit pixel mode (discretized logistic mixture of 5) against the same network on binary
pixels, and the share of the step spent in matrix products, from torch's profiler.

    python benchmarks/eightbit_speed.py [--baseline-src OLD/src] [--threads 2]

With --baseline-src (the src/ folder of another vaekit checkout) the same measurement runs
for that code too, in the same run, each in a fresh process. Appends a row to
benchmarks/results/eightbit_speed.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402

MEASURE = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
import vaekit
from vaekit.config import preset
try:
    from vaekit.models import build_model
    from vaekit.objectives import TrainingObjective as Objective
    def make(pixels):
        cfg = preset("mlp"); cfg.model.pixels = pixels; cfg.model.image_shape = [1, 28, 28]
        return build_model(cfg.model)
except ImportError:  # vaekit 0.1
    from vaekit.models import VAE
    from vaekit.training import Objective
    def make(pixels):
        cfg = preset("mlp"); cfg.model.image_shape = [1, 28, 28]
        cfg.model.likelihood = {"8bit": "logistic-mixture"}.get(pixels, "bernoulli")
        return VAE(cfg.model)
out = {}
for pixels in ("8bit", "static-binary"):
    torch.manual_seed(0)
    model = make(pixels)
    step_fn = Objective(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (512, 1, 28, 28), generator=g).float()
    if pixels != "8bit":
        x = (x > 127).float()
    def step():
        loss = step_fn(x)[0]
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    for _ in range(3): step()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(5): step()
        best = min(best, (time.perf_counter() - t0) / 5)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3): step()
    rows = prof.key_averages()
    total = sum(r.self_cpu_time_total for r in rows)
    mm_ops = ("aten::addmm", "aten::mm", "aten::bmm")
    mm = sum(r.self_cpu_time_total for r in rows if r.key in mm_ops)
    top = sorted(rows, key=lambda r: -r.self_cpu_time_total)[:8]
    out[pixels] = {
        "seconds_per_step": best,
        "images_per_s": 512 / best,
        "matmul_share": mm / total,
        "top_ops": [[r.key, r.self_cpu_time_total / total] for r in top],
    }
print(json.dumps(out))
"""


def measure(src: str, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": src}
    res = subprocess.run(
        [sys.executable, "-c", MEASURE, str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--baseline-src", help="src/ folder of another vaekit checkout")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    here = str(Path(__file__).resolve().parents[1] / "src")
    row: dict = {"batch_size": 512, "network": "mlp preset (784-512-512-32)"}
    runs = [("current", here)] + ([("baseline", args.baseline_src)] if args.baseline_src else [])
    for name, src in runs:
        row[name] = measure(src, args.threads)
        for pixels, r in row[name].items():
            print(
                f"{name:8s} {pixels:14s} {r['images_per_s']:8.0f} images/s  "
                f"matmuls {100 * r['matmul_share']:.0f}% of the step"
            )
    if args.baseline_src:
        row["baseline_src"] = args.baseline_src
    row.update(machine=machine(), command=command(), date=now())
    print(f"appended to {append_result('eightbit_speed', row)}")


if __name__ == "__main__":
    main()
