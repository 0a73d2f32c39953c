"""Where the exact coder's CPU and CUDA runs part ways (a debugging aid for a lent GPU).

    python benchmarks/exact_device_trace.py [--family vae|hvae] [--pixels 8bit] [--n 100]

Compresses the same images with the same tiny model on the CPU and on CUDA (exact
arithmetic, the default), tracing every torch call the coder makes. When the two files
differ, it names the first call whose result differs and prints its inputs and outputs
where they differ. Needs a CUDA device; writes nothing.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import tiny_model  # noqa: E402
from tests.test_hierarchical import hvae  # noqa: E402

from vaekit.coding.files import compress  # noqa: E402


def _tensors(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _tensors(item)]
    return []


def _digest(t: torch.Tensor) -> str:
    c = t.detach().cpu().contiguous()
    if c.dtype in (torch.bfloat16, torch.float16):
        c = c.view(torch.int16)
    return hashlib.sha1(c.numpy().tobytes()).hexdigest()[:16]


class Trace(TorchFunctionMode):
    """Records (name, shapes, digest) of every torch call's tensor results; at call number
    `keep` it also keeps the call's inputs and outputs."""

    def __init__(self, keep: int | None = None) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, str]] = []
        self.keep, self.kept = keep, None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = [t for t in _tensors(out) if t.layout == torch.strided]
        if outs:
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
            shapes = " ".join(str(tuple(t.shape)) for t in outs)
            self.calls.append((name, shapes, " ".join(_digest(t) for t in outs)))
            if self.keep == len(self.calls) - 1:
                self.kept = (
                    [t.detach().cpu().clone() for t in _tensors(args)],
                    [t.detach().cpu().clone() for t in outs],
                )
        return out


def _run(model, images, keep=None) -> tuple[bytes, Trace]:
    with Trace(keep) as trace:
        data = compress(model, images)
    return data, trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--family", default="vae", choices=["vae", "hvae"])
    ap.add_argument("--pixels", default="8bit")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--device", default="cuda", help="the device compared with the CPU")
    args = ap.parse_args()
    torch.manual_seed(0)
    shape = (1, 12, 12)
    cpu = (
        tiny_model(args.pixels, shape=shape, hidden=(64,))
        if args.family == "vae"
        else hvae(args.pixels, shape=shape)
    )
    gpu = copy.deepcopy(cpu).to(args.device)
    rng = np.random.default_rng(0)
    if args.pixels == "8bit":
        images = rng.integers(0, 256, (args.n, *shape), dtype=np.uint8)
    else:
        images = (rng.random((args.n, *shape)) < 0.3).astype(np.uint8)
    a, ta = _run(cpu, images)
    b, tb = _run(gpu, images)
    print(
        f"{args.family}/{args.pixels}: {len(ta.calls)} and {len(tb.calls)} traced calls; "
        f"files {'identical' if a == b else 'DIFFER'} ({len(a)} / {len(b)} bytes)"
    )
    first = next(
        (i for i, (x, y) in enumerate(zip(ta.calls, tb.calls, strict=False)) if x != y), None
    )
    if first is None:
        return
    for i in range(max(0, first - 4), min(first + 3, len(ta.calls))):
        mark = ">>" if i == first else "  "
        print(mark, i, ta.calls[i][:2], "cpu", ta.calls[i][2], "cuda", tb.calls[i][2])
    _, ka = _run(cpu, images, keep=first)
    _, kb = _run(gpu, images, keep=first)
    (ins_a, outs_a), (ins_b, outs_b) = ka.kept, kb.kept
    for j, (oa, ob) in enumerate(zip(outs_a, outs_b, strict=True)):
        diff = (oa != ob).reshape(-1) if oa.shape == ob.shape else None
        if diff is None or not diff.any():
            continue
        idx = diff.nonzero().reshape(-1)[:5]
        print(f"output {j} {oa.dtype}: {int(diff.sum())} of {diff.numel()} elements differ")
        for k in idx.tolist():
            row = [f"out cpu {oa.reshape(-1)[k].item()!r} cuda {ob.reshape(-1)[k].item()!r}"]
            for n, (ia, ib) in enumerate(zip(ins_a, ins_b, strict=False)):
                if ia.shape == oa.shape:
                    row.append(
                        f"in{n} cpu {ia.reshape(-1)[k].item()!r} cuda {ib.reshape(-1)[k].item()!r}"
                    )
            print("   ", "; ".join(row))
    for n, (ia, ib) in enumerate(zip(ins_a, ins_b, strict=False)):
        same = ia.shape == ib.shape and bool((ia == ib).all())
        print(f"input {n} {tuple(ia.shape)} {ia.dtype}: {'same' if same else 'DIFFERS'}")


if __name__ == "__main__":
    main()
