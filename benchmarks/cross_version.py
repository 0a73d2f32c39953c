"""Files written by one torch decode under another (issue 14): write `.vkz` files with this
environment's torch, then decode them in a throwaway environment with the oldest torch that
pyproject allows, and compare byte for byte (images) and bit for bit (the files).

    python benchmarks/cross_version.py write DIR --run RUN_DIR [--run RUN_DIR ...] [--n 1000]
                                          [--arithmetic float]
    OTHER_ENV/bin/python benchmarks/cross_version.py read DIR [--threads 1]

`write` codes the first N MNIST test images (8-bit, or binarized for a binary model) with each
run's model and saves the files, the inputs' SHA-256 and the writer's versions. `read` decodes
every file with the same checkpoints, checks the images, re-encodes them and checks that the
new file is the same bytes, and appends a row to benchmarks/results/cross_version.jsonl.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402
from vaekit import __version__, load_checkpoint  # noqa: E402
from vaekit.coding.exact_arithmetic import ARITHMETIC  # noqa: E402
from vaekit.coding.files import compress, decompress  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402
from vaekit.data.pixels import binarize_fixed  # noqa: E402
from vaekit.errors import VaekitError  # noqa: E402


def _images(model, n: int) -> np.ndarray:
    test = load_dataset("mnist").test[:n]
    if model.likelihood.name == "bernoulli":
        return binarize_fixed(torch.from_numpy(test), seed=1).numpy()
    return test


def _versions() -> dict[str, str]:
    import constriction

    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "constriction": getattr(constriction, "__version__", "?"),
        "vaekit": __version__,
        "python": sys.version.split()[0],
    }


def write(out: Path, runs: list[str], n: int, arithmetic: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, run in enumerate(runs):
        model = load_checkpoint(run)[0]
        images = _images(model, n)
        blob = compress(model, images, arithmetic=arithmetic)
        name = f"file{i}.vkz"
        (out / name).write_bytes(blob)
        files.append(
            {
                "run": str(Path(run).resolve()),
                "file": name,
                "n": n,
                "arithmetic": arithmetic,
                "file_sha256": hashlib.sha256(blob).hexdigest(),
                "images_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
            }
        )
        print(f"{run}: {len(blob)} bytes")
    manifest = {"writer": _versions(), "writer_machine": machine(), "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


def read(out: Path) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    results = []
    for f in manifest["files"]:
        model = load_checkpoint(f["run"])[0]
        blob = (out / f["file"]).read_bytes()
        t0 = time.perf_counter()
        try:
            images = decompress(model, blob)
        except VaekitError as e:  # the float coder's files need not decode elsewhere
            print(f"{f['file']}: {e}")
            results.append({**f, "decoded_exactly": False, "error": str(e)})
            continue
        seconds = time.perf_counter() - t0
        same_images = hashlib.sha256(images.tobytes()).hexdigest() == f["images_sha256"]
        again = compress(model, images, arithmetic=f["arithmetic"])
        same_file = hashlib.sha256(again).hexdigest() == f["file_sha256"]
        results.append(
            {
                **f,
                "decoded_exactly": same_images,
                "reencoded_same_bytes": same_file,
                "decompress_s": seconds,
            }
        )
        print(f"{f['file']} ({f['run']}): decoded exactly {same_images}, same bytes {same_file}")
    row = {
        "writer": manifest["writer"],
        "writer_machine": manifest["writer_machine"],
        "reader": _versions(),
        "reader_machine": machine(),
        "results": results,
        "all_exact": all(r["decoded_exactly"] and r.get("reencoded_same_bytes") for r in results),
        "command": command(),
        "date": now(),
    }
    print(f"appended to {append_result('cross_version', row)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("dir", type=Path)
    w.add_argument("--run", action="append", required=True)
    w.add_argument("--n", type=int, default=1000)
    w.add_argument("--arithmetic", default=ARITHMETIC, help='"float": the coder of vaekit <= 0.3')
    r = sub.add_parser("read")
    r.add_argument("dir", type=Path)
    for p in (w, r):
        p.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.cmd == "write":
        write(args.dir, args.run, args.n, args.arithmetic)
    else:
        read(args.dir)


if __name__ == "__main__":
    main()
