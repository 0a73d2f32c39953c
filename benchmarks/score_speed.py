"""How long `vaekit score` takes on a plain `vaekit train` run folder (issue 15): the first
call fits what the default score needs (background model, local intensity model, reference
scores) and keeps it in the run folder; later calls only score.

    python benchmarks/score_speed.py --run RUN_DIR [--data PATH_TO_IMAGES] [--repeats 2]

The run folder is copied to a temporary folder first, so RUN_DIR is left as it was. Each call
is the installed `vaekit` command in a fresh process (start-up and data loading included),
timed by the wall clock. Appends one row to benchmarks/results/score_speed.jsonl.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/mnist/t10k-images-idx3-ubyte.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", required=True, help="a plain `vaekit train` run folder")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="images to score")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls after the first")
    args = ap.parse_args()
    vaekit = Path(sys.executable).with_name("vaekit")
    times = []
    with tempfile.TemporaryDirectory(prefix="vaekit-score-speed-") as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(args.run, run)
        for i in range(1 + args.repeats):
            out = Path(tmp) / f"scores-{i}.csv"
            t0 = time.perf_counter()
            res = subprocess.run(
                [str(vaekit), "score", str(run), args.data, "--out", str(out)],
                capture_output=True,
                text=True,
            )
            times.append(time.perf_counter() - t0)
            if res.returncode != 0:
                raise SystemExit(f"vaekit score failed: {res.stderr.strip()[-500:]}")
            print(f"call {i + 1}: {times[-1]:.1f} s  {res.stdout.strip()}", flush=True)
            if i and out.read_bytes() != (Path(tmp) / "scores-0.csv").read_bytes():
                raise SystemExit("a later call wrote different scores than the first")
        kept = sorted(p.name for p in run.iterdir())
        n = sum(1 for _ in open(Path(tmp) / "scores-0.csv")) - 1
    row = {
        "run": args.run,
        "data": args.data,
        "examples": n,
        "first_call_seconds": times[0],
        "later_call_seconds": times[1:],
        "kept_in_run_folder": kept,
        "machine": machine(),
        "command": command(),
        "date": now(),
    }
    print(f"appended to {append_result('score_speed', row)}")


if __name__ == "__main__":
    main()
