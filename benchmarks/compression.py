"""Lossless compression of the 10,000 MNIST test images: vaekit (bits-back ANS) against
generic coders, in bits/dim, plus compress/decompress speed.

    python benchmarks/compression.py [--model-8bit RUN_DIR] [--model-binary RUN_DIR] [--threads 2]
                                     [--particles 4 16] [--compare-float]

Without a run folder the script trains the model itself with vaekit.train: the `mlp-8bit`
preset for 8-bit MNIST, the `mlp` preset (dynamically binarized) for binarized MNIST, each
on the MNIST training set, into benchmarks/out/ (the row records which run it used).

Generic coders are the command-line tools (gzip -9, bzip2 -9, xz -9e, zstd --ultra -22) on
the raw pixel bytes (8-bit) or the packed bits (binarized), and Pillow's PNG (optimize) and
WebP lossless, per image and as one 100x100 mosaic. Every vaekit output is decoded and
compared with the input before its size is reported. Appends rows to
benchmarks/results/compression.jsonl.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402
from vaekit import load_checkpoint, preset, train  # noqa: E402
from vaekit.coding.exact_arithmetic import ARITHMETIC  # noqa: E402
from vaekit.coding.files import compress, decompress, ideal_rates, read_header  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402
from vaekit.data.pixels import binarize_fixed  # noqa: E402
from vaekit.run import RunFolder  # noqa: E402

TOOLS = {
    "gzip -9": ["gzip", "-9", "-c"],
    "bzip2 -9": ["bzip2", "-9", "-c"],
    "xz -9e": ["xz", "-9e", "-c"],
    "zstd --ultra -22": ["zstd", "--ultra", "-22", "-c", "-q"],
}


def tool_size(cmd: list[str], data: bytes) -> int:
    return len(subprocess.run(cmd, input=data, capture_output=True, check=True).stdout)


def pil_size(images: np.ndarray, fmt: str, mosaic: bool) -> int:
    """Total bytes of PNG (optimize) or lossless WebP files, per image or as one mosaic."""
    kw = {"optimize": True} if fmt == "PNG" else {"lossless": True, "quality": 100, "method": 6}
    if mosaic:
        n, h, w = images.shape
        side = int(np.ceil(np.sqrt(n)))
        canvas = np.zeros((side * h, side * w), np.uint8)
        for i, im in enumerate(images):
            r, c = divmod(i, side)
            canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = im
        images = canvas[None]
    total = 0
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format=fmt, **kw)
        total += buf.tell()
    return total


def vaekit_row(
    model,
    images: np.ndarray,
    ideal_k: int,
    ideal_n: int,
    particles: int = 1,
    arithmetic: str = ARITHMETIC,
) -> dict:
    t0 = time.perf_counter()
    data = compress(model, images, particles=particles, arithmetic=arithmetic)
    t_c = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = decompress(model, data)
    t_d = time.perf_counter() - t0
    assert np.array_equal(back, images), "round trip failed"
    dims = images.size
    elbo = ideal_rates(model, images, k=0)
    lp = ideal_rates(model, images[:ideal_n], k=ideal_k) if ideal_n else {"bits_per_dim": None}
    header, words = read_header(data)
    return {
        "arithmetic": arithmetic,
        "format_version": data[4],
        "bytes": len(data),
        "bits_per_dim": 8 * len(data) / dims,
        "payload_bits_per_dim": 8 * words.nbytes / dims,
        "header_and_framing_bytes": len(data) - 4 * len(words),
        "neg_elbo_bits_per_dim": elbo["elbo_bits_per_dim"],
        "neg_log_px_bits_per_dim": lp["bits_per_dim"],
        "log_px_estimator": f"IS K={ideal_k} on the first {ideal_n} images",
        "compress_s": t_c,
        "decompress_s": t_d,
        "compress_images_per_s": len(images) / t_c,
        "decompress_images_per_s": len(images) / t_d,
        "exact": True,
        "particles": particles,
    }


def generic_rows(images: np.ndarray, payload: bytes, with_images: bool) -> dict[str, float]:
    dims = images.size
    out = {name: 8 * tool_size(cmd, payload) / dims for name, cmd in TOOLS.items()}
    if with_images:
        for fmt in ("PNG", "WEBP"):
            out[f"{fmt} per image"] = 8 * pil_size(images, fmt, False) / dims
            out[f"{fmt} mosaic"] = 8 * pil_size(images, fmt, True) / dims
    return out


def trained(name: str, threads: int) -> Path:
    """Train preset `name` on MNIST's training set and return its run folder."""
    cfg = preset(name)
    cfg.train.threads = threads
    run = Path("benchmarks/out") / f"compression-{name}-{int(time.time())}"
    t0 = time.perf_counter()
    train(cfg, run, progress=True)
    print(f"trained {name} in {time.perf_counter() - t0:.0f} s: {run}")
    return run


def training_record(run: Path) -> dict | None:
    """How the coded model was trained, from its metrics.jsonl: epochs, wall seconds, and the
    monitored test ELBO at the end and at its best epoch (a best well before the end is
    overfitting)."""
    rows = RunFolder(run).read_metrics()
    if not rows:
        return None
    best = max(rows, key=lambda r: r["test_elbo"])
    return {
        "epochs": rows[-1]["epoch"],
        "elapsed_seconds": rows[-1].get("elapsed_seconds"),
        "train_seconds": sum(r["train_seconds"] for r in rows),
        "world_size": rows[-1].get("world_size"),
        "final_test_elbo": rows[-1]["test_elbo"],
        "best_test_elbo": best["test_elbo"],
        "best_epoch": best["epoch"],
    }


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-8bit", help="run folder [trains the mlp-8bit preset]")
    ap.add_argument("--model-binary", help="run folder [trains the mlp preset]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--kinds",
        nargs="+",
        default=["8bit", "binary"],
        choices=["8bit", "binary"],
        help="which data to code [both]",
    )
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--ideal-k", type=int, default=100)
    ap.add_argument("--ideal-n", type=int, default=1000)
    ap.add_argument(
        "--particles",
        type=int,
        nargs="*",
        default=[],
        help="also code with importance-weighted bits-back at these K (e.g. 4 16)",
    )
    ap.add_argument(
        "--compare-float",
        action="store_true",
        help="also code with the float coder of vaekit <= 0.3 (formats 2-4): the cost of exact "
        "arithmetic in rate and speed, same model, same run",
    )
    ap.add_argument(
        "--device",
        default="cpu",
        help="run the coder's networks here (cuda: the same bytes as on the CPU, tested)",
    )
    ap.add_argument("--no-generic", action="store_true", help="skip the generic coders")
    ap.add_argument("--note", help="a remark stored with the row (what the run is for)")
    return ap


def _float_rows(model, images, vk: dict, weighted: dict) -> dict:
    """The float coder's rows beside the exact ones, each compared in one printed line."""
    floated = {"1": vaekit_row(model, images, 0, 0, 1, "float")}
    for k in weighted:
        floated[str(k)] = vaekit_row(model, images, 0, 0, k, "float")
    for k, f in floated.items():
        e = vk if k == "1" else weighted[int(k)]
        print(
            f"  K={k}: exact {e['bits_per_dim']:.5f} vs float {f['bits_per_dim']:.5f} "
            f"bits/dim (exact - float {e['bits_per_dim'] - f['bits_per_dim']:+.5f}); "
            f"compress {e['compress_images_per_s']:.0f} vs {f['compress_images_per_s']:.0f}"
            f" img/s, decompress {e['decompress_images_per_s']:.0f} vs "
            f"{f['decompress_images_per_s']:.0f} img/s"
        )
    return floated


def _print_kind(kind: str, images, vk: dict, weighted: dict, gen: dict) -> None:
    for k, w in weighted.items():
        print(
            f"  importance-weighted bits-back, K={k}: {w['bits_per_dim']:.4f} bits/dim "
            f"(plain {vk['bits_per_dim']:.4f}); compress {w['compress_images_per_s']:.0f} "
            f"img/s, decompress {w['decompress_images_per_s']:.0f} img/s"
        )
    print(f"\n{kind} MNIST test ({len(images)} images), bits/dim:")
    lp = vk["neg_log_px_bits_per_dim"]
    lp_text = f"{lp:.4f} [{vk['log_px_estimator']}]" if lp is not None else "not estimated"
    print(
        f"  vaekit bits-back ANS      {vk['bits_per_dim']:.4f}  (model -ELBO "
        f"{vk['neg_elbo_bits_per_dim']:.4f}, -log p(x) {lp_text})  compress "
        f"{vk['compress_images_per_s']:.0f} img/s, "
        f"decompress {vk['decompress_images_per_s']:.0f} img/s"
    )
    for name, v in sorted(gen.items(), key=lambda kv: kv[1]):
        print(f"  {name:<24s} {v:.4f}   (vaekit is {v / vk['bits_per_dim']:.2f}x smaller)")


def _code_kind(args, kind: str, run: str, images) -> dict:
    """Every coder's result on one kind of data (8bit or binary)."""
    if run in ("mlp-8bit", "mlp"):
        run = trained(run, args.threads)
    model, cfg, _ = load_checkpoint(run, map_location=args.device)
    payload = images.tobytes() if kind == "8bit" else np.packbits(images).tobytes()
    gen = {}
    if not args.no_generic:
        gen = generic_rows(images[:, 0] * (255 if kind == "binary" else 1), payload, True)
    ideal_n = min(args.ideal_n, len(images))
    vk = vaekit_row(model, images, args.ideal_k, ideal_n)
    weighted = {
        k: vaekit_row(model, images, args.ideal_k, ideal_n, k) for k in args.particles if k > 1
    }
    floated = _float_rows(model, images, vk, weighted) if args.compare_float else {}
    _print_kind(kind, images, vk, weighted, gen)
    return {
        "vaekit": vk,
        "vaekit_importance_weighted": {str(k): w for k, w in weighted.items()},
        "vaekit_float_arithmetic": floated,
        "generic": gen,
        "model": str(run),
        "model_config": cfg.to_dict(),
        "model_training": training_record(Path(run)),
    }


def main() -> None:
    args = _parser().parse_args()
    torch.set_num_threads(args.threads)
    test = load_dataset("mnist").test[: args.n]  # (N, 1, 28, 28) uint8
    binary = binarize_fixed(torch.from_numpy(test), seed=1).numpy()  # the fixed test binarization
    results = {}
    for kind, run, images in (
        ("8bit", args.model_8bit or "mlp-8bit", test),
        ("binary", args.model_binary or "mlp", binary),
    ):
        if kind in args.kinds:
            results[kind] = _code_kind(args, kind, run, images)
    row = {
        "n": len(test),
        "device": args.device,
        "results": results,
        "machine": machine(),
        "command": command(),
        "date": now(),
        **({"note": args.note} if args.note else {}),
    }
    print(f"\nappended to {append_result('compression', row)}")
    print(json.dumps({k: {"vaekit": v["vaekit"]["bits_per_dim"]} for k, v in results.items()}))


if __name__ == "__main__":
    main()
