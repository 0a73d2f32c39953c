"""How fast exact coding of a model could possibly be on this machine: the networks alone.

Bits-back coding with K particles runs, on each side, the bottom-up encoder once per image
and the decoder once per particle (vaekit's exact importance-weighted coder). This script
times those two passes of a model's exact copy under `ExactArithmetic` (the coder's own
arithmetic, in chunks of the nets' `exact_rows`; also in one pass over all rows), and the
same passes in plain float32 for comparison (not exact: the machine's ceiling for these
networks), on batches of the coder's size (B images for the encoder, the K x B particle
rows for the decoder). From them it gives a floor for coding N images with K particles, one
direction: N / encoder rate + K N / decoder rate. The real coder also runs the top-down
path, the likelihood and the ANS steps, so it is slower.

    python benchmarks/exact_floor.py --run benchmarks/out/RUN --particles 1 4 8
    python benchmarks/exact_floor.py --preset hvae-conv-cpu   # untrained: speed only

Writes a row to benchmarks/results/exact_floor.jsonl.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402
from vaekit import load_checkpoint, preset  # noqa: E402
from vaekit.coding.exact_arithmetic import ExactArithmetic, exact_copy  # noqa: E402
from vaekit.models.base import build_model  # noqa: E402


def multiply_adds(model, run, x: torch.Tensor) -> int:
    """Multiply-adds per image of `run(model, x)`, counted from the shapes of every linear
    and convolution layer's output (x holds one image)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        elif isinstance(module, nn.Conv2d):
            total += output.numel() * module.weight[0].numel()
        elif isinstance(module, nn.ConvTranspose2d):
            # each input element meets every weight of its input channel once
            total += inputs[0].numel() * module.weight[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            run(model, x)
    finally:
        for h in handles:
            h.remove()
    return total


def images_per_s(model, run, x: torch.Tensor, exact: bool, repeats: int) -> float:
    """Images per second of `run(model, x)`: the best of `repeats` timed passes."""
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms up and is not counted
        t0 = time.perf_counter()
        with torch.no_grad():
            if exact:
                with ExactArithmetic():
                    run(model, x)
            else:
                run(model, x)
        best = min(best, time.perf_counter() - t0)
    return x.shape[0] / best


def encoder(model, x):
    return model.bottom_up(x)


def decoder(model, z):
    return model.decode_params(z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a run folder (trained model)")
    src.add_argument("--preset", help="a preset's architecture, untrained (speed only)")
    ap.add_argument("--batch", type=int, default=100, help="images per pass [100, the coder's]")
    ap.add_argument("--particles", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--images", type=int, default=10000, help="N of the floor [10,000]")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.run:
        model = load_checkpoint(args.run)[0].eval()
    else:
        model = build_model(preset(args.preset).model).eval()
    shape = tuple(model.config.image_shape)
    x = torch.randint(0, 2, (args.batch, *shape)).float()
    if model.pixels.name == "8bit":
        x = torch.randint(0, 256, (args.batch, *shape)).float()
    twin = exact_copy(model)
    whole = exact_copy(model)
    for module in whole.modules():
        module.__dict__.pop("forward", None)  # undo `row_chunked`: one pass over every row
    passes = {}

    def measure(run, inp):
        return {
            "rows": inp.shape[0],
            "multiply_adds_per_image": multiply_adds(model, run, inp[:1]),
            "exact_images_per_s": images_per_s(twin, run, inp.double(), True, args.repeats),
            "exact_one_pass_images_per_s": images_per_s(
                whole, run, inp.double(), True, args.repeats
            ),
            "float32_images_per_s": images_per_s(model, run, inp, False, args.repeats),
        }

    passes["encoder"] = measure(encoder, x)
    floors = {}
    for k in args.particles:
        # the coder runs the decoder on the K x B particle rows of a batch at once
        z = torch.randn(k * args.batch, model.latent_dim)
        passes[f"decoder K={k}"] = dec = measure(decoder, z)
        floors[str(k)] = {
            kind: args.images / passes["encoder"][f"{kind}_images_per_s"]
            + k * args.images / dec[f"{kind}_images_per_s"]
            for kind in ("exact", "float32")
        }
    for name, p in passes.items():
        macs = p["multiply_adds_per_image"]
        print(
            f"{name}: {macs / 1e6:.2f}M multiply-adds per image; exact "
            f"{p['exact_images_per_s']:.0f} images/s ({macs * p['exact_images_per_s'] / 1e9:.1f} "
            f"GMAC/s; {p['exact_one_pass_images_per_s']:.0f} in one pass over the "
            f"{p['rows']} rows), float32 {p['float32_images_per_s']:.0f} images/s "
            f"({macs * p['float32_images_per_s'] / 1e9:.1f} GMAC/s)"
        )
    for k, f in floors.items():
        print(
            f"K={k}: {args.images} images need at least {f['exact']:.1f} s of exact network "
            f"passes each way (float32: {f['float32']:.1f} s)"
        )
    row = {
        "model": args.run or f"preset {args.preset}, untrained",
        "model_config": asdict(model.config),
        "batch": args.batch,
        "images": args.images,
        "passes": passes,
        "floor_s_each_way": floors,
        "machine": machine(),
        "command": command(),
        "date": now(),
    }
    print(f"appended to {append_result('exact_floor', row)}")


if __name__ == "__main__":
    main()
