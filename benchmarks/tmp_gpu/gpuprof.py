import sys, tempfile, time, warnings, traceback, collections
import torch

sys.path.insert(0, "src")
from vaekit import preset, train
from vaekit.config import apply_overrides
from torch.profiler import profile, ProfilerActivity

cfg = apply_overrides(preset("fast"), ["device=cuda", "epochs=1", "limit=12800"])
with tempfile.TemporaryDirectory() as d:
    train(cfg, d + "/w", progress=False)
    seen = collections.Counter()

    def show(message, category, filename, lineno, file=None, line=None):
        stack = "".join(traceback.format_stack(limit=8)[:-2])
        seen[(str(message)[:80], stack)] += 1

    warnings.showwarning = show
    torch.cuda.set_sync_debug_mode("warn")
    train(cfg, d + "/s", progress=False)
    torch.cuda.set_sync_debug_mode(0)
    for (m, st), n in seen.most_common(6):
        print("SYNC x", n, m, "\n", st[-900:])
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        train(
            cfg,
            d + "/r",
            progress=False,
            on_epoch=lambda row, m: print("img/s", round(row["images_per_s"])),
        )
ev = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)
for e in ev[:40]:
    print(f"{e.key[:50]:50s} {e.self_cpu_time_total / 1e3:8.1f}ms {e.count:6d}")
