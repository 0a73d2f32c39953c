"""Resident memory while training on growing datasets: streamed shards against in memory.

    python benchmarks/streaming_memory.py [--sizes 60000 240000 960000] [--threads 2]

For each size N, writes N MNIST training images (tiled) as 60,000-image uint8 `.npy` shards,
then trains one epoch of the `demo` network in a fresh process, once with
`train.stream=true` (memory-mapped shards through a DataLoader with 2 workers) and once with
the data loaded into memory. A thread samples the anonymous resident memory of the training
process and its DataLoader workers every 50 ms (Pss_Anon: heap and tensors, with pages the
forked workers share counted once, and not the reclaimable page cache that memory-mapped
reads fill); the peak of their sum is reported. Appends one row to
benchmarks/results/streaming_memory.jsonl.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402

CHILD = r"""
import json, os, sys, threading, time
from pathlib import Path
import torch
from vaekit import preset, train
from vaekit.config import apply_overrides

def anon_kib(pid):
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss_Anon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

def family(pid):
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out

peak = [0]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], sum(anon_kib(p) for p in family(os.getpid())))
        time.sleep(0.05)

data, stream, threads = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
cfg = apply_overrides(preset("demo"), [
    f"data={data}", f"stream={stream}", "epochs=1", "batch_size=256", f"threads={threads}",
])
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
train(cfg, Path(sys.argv[4]) / "run", progress=False)
done.set()
time.sleep(0.1)
print(json.dumps({"peak_anon_pss_mib": peak[0] / 1024, "seconds": time.perf_counter() - t0}))
"""


def write_shards(folder: Path, images: np.ndarray, n: int, shard: int = 60000) -> None:
    (folder / "train").mkdir(parents=True)
    (folder / "test").mkdir()
    for i, start in enumerate(range(0, n, shard)):
        np.save(folder / "train" / f"{i:04d}.npy", images[: min(shard, n - start)])
    np.save(folder / "test" / "0000.npy", images[:10000])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[60000, 240000, 960000])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from vaekit.data import load_dataset

    images = load_dataset("mnist").train  # (60000, 1, 28, 28) uint8
    row: dict = {"sizes": args.sizes, "streamed": {}, "in_memory": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            shards = Path(tmp) / f"n{n}"
            write_shards(shards, images, n)
            whole = Path(tmp) / f"n{n}.npy"  # the same images as one array, for in-memory
            np.save(
                whole,
                np.concatenate([np.load(p) for p in sorted((shards / "train").glob("*.npy"))]),
            )
            for key, data, stream in (("streamed", shards, "1"), ("in_memory", whole, "0")):
                with tempfile.TemporaryDirectory() as out:
                    res = subprocess.run(
                        [sys.executable, "-c", CHILD, str(data), stream, str(args.threads), out],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                row[key][n] = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"N={n:>8} {key:>9}: {row[key][n]}", flush=True)
            whole.unlink()
    row.update(machine=machine(), command=command(), date=now())
    print(f"appended to {append_result('streaming_memory', row)}")


if __name__ == "__main__":
    main()
