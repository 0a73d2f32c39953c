import sys, tempfile, time, json
import torch

sys.path.insert(0, "src")
from vaekit import preset, train
from vaekit.config import apply_overrides


def go(name, ov):
    cfg = apply_overrides(preset(name), ["device=cuda", *ov])
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        train(cfg, d + "/r", progress=False, on_epoch=lambda r, m: rows.append(r))
    print(
        name,
        ov,
        "img/s",
        [round(r["images_per_s"]) for r in rows],
        "train_s",
        [round(r["train_seconds"], 2) for r in rows],
        "test_elbo",
        round(rows[-1]["test_elbo"], 2),
        "wall",
        round(time.perf_counter() - t0, 1),
        flush=True,
    )


for spec in sys.argv[1:]:
    name, *ov = spec.split()
    try:
        go(name, ov)
    except Exception as e:
        print(spec, "FAILED", repr(e)[:300], flush=True)
try:
    from torch._dynamo.utils import counters

    print(
        "dynamo counters", {k: dict(v) for k, v in counters.items() if k in ("stats", "recompiles")}
    )
except Exception as e:
    print(e)
