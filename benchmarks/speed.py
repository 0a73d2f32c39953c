"""Training and evaluation speed against the classic PyTorch example VAE, in one run.

    python benchmarks/speed.py [--threads 2] [--device cpu|cuda] [--eval-run RUN]

The reference, written here, mirrors the PyTorch example (MLP 784-400-20, Bernoulli decoder
on [0,1] pixels, Adam lr 1e-3, batch 128, a DataLoader over tensors, each batch moved to the
device). vaekit is timed through its own `vaekit.train` (the loop users run), reading the
seconds each epoch spent training from its metrics (per-epoch evaluation and checkpoint
writes excluded, as the reference's test pass is). Reported:
1. training throughput (images/s) of vaekit's `mlp` and `conv` presets and of the reference;
2. time-to-quality: training seconds until the test loss on [0,1] pixels (the example's
   metric: BCE summed over pixels + KL, per image, one posterior sample) reaches what the
   reference reaches after --ref-epochs epochs; vaekit runs its `fast` preset, and the same
   preset in float32 (`cpu_bf16=false bf16=false`) so that recipe and precision are seen apart;
3. seconds for log p(x) with K=--eval-k over the 10,000 test images (an `mlp`-preset model);
4. the fraction of this machine's matmul peak (in the precision training uses: float32 on
   CPU, bf16 under CUDA autocast) that training reaches. A shared machine's speed drifts by
   tens of percent from minute to minute, so the peak is measured again after every epoch
   and each epoch is compared with the mean of the peaks measured just before and after it;
   the fraction quoted is the median over epochs after the first.
Appends one row to benchmarks/results/speed.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402
from vaekit import VAE, load_checkpoint, preset, train  # noqa: E402
from vaekit.config import apply_overrides  # noqa: E402
from vaekit.data import load_dataset, prepare_split  # noqa: E402
from vaekit.device import resolve_device  # noqa: E402
from vaekit.evaluation import evaluate  # noqa: E402


class ReferenceVAE(nn.Module):
    """The PyTorch example's VAE: 784-400-20, ReLU, sigmoid outputs."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def reference_loss(recon, mu, logvar, x):
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


@torch.no_grad()
def reference_test_loss(model, test):
    model.eval()
    return sum(reference_loss(*model(x), x).item() for x in test.split(1000)) / len(test)


@torch.no_grad()
def vaekit_test_loss(model: VAE, test01: torch.Tensor) -> float:
    """The example's metric for a vaekit Bernoulli model: BCE on [0,1] pixels + KL."""
    model.eval()
    total = 0.0
    for x in test01.split(1000):
        q = model.encode(x)
        logits = model.decoder(q.rsample())
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        total += (
            bce + torch.distributions.kl_divergence(q, model.prior_distribution()).sum()
        ).item()
    return total / len(test01)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of a large square matmul on `device` (the best of a few runs)."""
    if device.type == "cuda":
        n, reps = 8192, 20
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def mlp_flops_per_image(model: nn.Module) -> float:
    """Training FLOPs per image of an MLP: 3 x (2 x multiply-adds) of its linear layers."""
    macs = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    return 6.0 * macs


class PeakProbe:
    """Matmul peaks measured between epochs: `around(i)` is the mean of the peaks measured
    just before and just after epoch i (0-based)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, first: float | None = None):
        self.device, self.dtype = device, dtype
        self.peaks = [first if first is not None else matmul_peak(device, dtype)]

    def measure(self) -> None:
        self.peaks.append(matmul_peak(self.device, self.dtype))

    def around(self, i: int) -> float:
        return (self.peaks[i] + self.peaks[i + 1]) / 2


def paired_fraction(flops_per_image: float, rates: list[float], probe: PeakProbe) -> dict:
    """Each epoch's GFLOP/s over the peak measured around it; the median after epoch one."""
    fractions = [flops_per_image * r / 1e9 / probe.around(i) for i, r in enumerate(rates)]
    steady = sorted(fractions[1:] or fractions)
    return {
        "peak_fraction": steady[len(steady) // 2],
        "peak_fraction_per_epoch": fractions,
        "peaks_gflops_between_epochs": probe.peaks,
    }


def run_reference(args, device, train01, test01, probe: PeakProbe) -> dict:
    torch.manual_seed(0)
    ref = ReferenceVAE().to(device)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(train01), batch_size=128, shuffle=True)
    test = test01.to(device)
    curve, elapsed, seen, rates = [], 0.0, 0, []
    for epoch in range(args.ref_epochs):
        ref.train()
        t0, n0 = time.perf_counter(), seen
        for (x,) in loader:
            x = x.to(device)
            opt.zero_grad()
            loss = reference_loss(*ref(x), x)
            loss.backward()
            opt.step()
            seen += len(x)
        _sync(device)
        dt = time.perf_counter() - t0
        elapsed += dt
        rates.append((seen - n0) / dt)
        curve.append((elapsed, reference_test_loss(ref, test)))
        probe.measure()
        print(f"reference epoch {epoch + 1}: test loss {curve[-1][1]:.2f} at {elapsed:.1f}s")
    flops = mlp_flops_per_image(ref)
    return {
        "images_per_s": seen / elapsed,
        "test_loss_curve": curve,
        "target_loss": curve[-1][1],
        "seconds_to_target": elapsed,
        "flops_per_image": flops,
        **paired_fraction(flops, rates, probe),
    }


def run_vaekit(
    name: str,
    overrides: list[str],
    out: Path,
    test01=None,
    target=None,
    label: str | None = None,
    probe: PeakProbe | None = None,
) -> dict:
    """Train a preset through `vaekit.train`; with `test01`, the example's test loss per epoch;
    with `probe`, the matmul peak measured after every epoch."""
    label = label or name
    cfg = apply_overrides(preset(name), overrides)
    curve: list[tuple[float, float]] = []
    rows: list[dict] = []
    elapsed = [0.0]

    def on_epoch(row: dict, model: VAE) -> None:
        rows.append(row)
        elapsed[0] += row["train_seconds"]
        if test01 is not None:
            curve.append((elapsed[0], vaekit_test_loss(model, test01)))
            print(f"vaekit {label}: test loss {curve[-1][1]:.2f} at {elapsed[0]:.1f}s", flush=True)
        if probe is not None:
            probe.measure()

    t0 = time.perf_counter()
    train(cfg, out / label, progress=False, on_epoch=on_epoch)
    wall = time.perf_counter() - t0
    steady = rows[1:] or rows  # the first epoch includes one-off warm-up (allocation, cuDNN)
    res: dict = {
        "preset": name,
        "overrides": overrides,
        "autocast": rows[-1].get("autocast"),
        "images_per_s": sum(r["images_per_s"] for r in steady) / len(steady),
        "images_per_s_per_epoch": [r["images_per_s"] for r in rows],
        "train_seconds": elapsed[0],
        "wall_seconds_with_eval_and_checkpoints": wall,
    }
    if test01 is not None:
        res["test_loss_curve"] = curve
        reached = next((t for t, loss in curve if loss <= target), None)
        res["seconds_to_target"] = reached
    print(f"vaekit {label}: {json.dumps({k: v for k, v in res.items() if 'curve' not in k})}")
    return res


def peak_only(args, device: torch.device, train_dtype: torch.dtype, row: dict) -> None:
    """Item 4 alone for several presets, side by side: a row in speed.jsonl per run."""
    common = [f"device={device.type}", f"threads={args.threads}", "epochs=4"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.peak_presets:
            probe = PeakProbe(device, train_dtype)
            res = row[f"vaekit_{name}"] = run_vaekit(name, common, Path(tmp), probe=probe)
            res["flops_per_image"] = mlp_flops_per_image(load_checkpoint(Path(tmp) / name)[0])
            res.update(
                paired_fraction(res["flops_per_image"], res["images_per_s_per_epoch"], probe)
            )
            print(
                f"vaekit {name}: {res['images_per_s']:.0f} img/s, "
                f"{res['peak_fraction']:.1%} of the {train_dtype} matmul peak"
            )
    row.update({"machine": machine(), "command": command(), "date": now()})
    print(f"appended to {append_result('speed', row)}")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--ref-epochs", type=int, default=10)
    ap.add_argument("--eval-k", type=int, default=5000)
    ap.add_argument("--eval-run", help="a trained mlp run for item 3 (else the run timed in 1)")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument(
        "--peak-presets",
        nargs="+",
        help="only item 4: images/s and fraction of the matmul peak of these presets "
        "(4 epochs each, in one run), e.g. --peak-presets mlp hvae",
    )
    return ap


def _vaekit_rows(args, device, train_dtype, ref: dict, test01, out: Path, row: dict) -> None:
    """Items 1 and 2: vaekit's presets timed, to the reference's target loss and per image."""
    common = [f"device={device.type}", f"threads={args.threads}"]
    test_dev = test01.view(-1, 1, 28, 28).to(device)
    fast = row["vaekit_fast"] = run_vaekit("fast", common, out, test_dev, ref["target_loss"])
    fast32 = row["vaekit_fast_float32"] = run_vaekit(
        "fast",
        [*common, "cpu_bf16=false", "bf16=false"],
        out,
        test_dev,
        ref["target_loss"],
        "fast-fp32",
    )
    for res in (fast, fast32):
        if res["seconds_to_target"]:
            res["speedup_to_target"] = ref["seconds_to_target"] / res["seconds_to_target"]
    probe = PeakProbe(device, train_dtype)
    mlp = row["vaekit_mlp"] = run_vaekit("mlp", [*common, "epochs=4"], out, probe=probe)
    model = load_checkpoint(out / "mlp")[0]
    mlp["flops_per_image"] = mlp_flops_per_image(model)
    mlp.update(paired_fraction(mlp["flops_per_image"], mlp["images_per_s_per_epoch"], probe))
    print(f"vaekit mlp: {mlp['peak_fraction']:.1%} of the {train_dtype} matmul peak")
    # Convolutions on a 2-core CPU take minutes per epoch: time a tenth of the data there.
    conv_limit = ["limit=6000"] if device.type == "cpu" else []
    row["vaekit_conv"] = run_vaekit("conv", [*common, "epochs=2", *conv_limit], out)
    for key in ("vaekit_fast", "vaekit_fast_float32", "vaekit_mlp", "vaekit_conv"):
        row[key]["throughput_ratio_vs_reference"] = row[key]["images_per_s"] / ref["images_per_s"]


def _evaluation_row(args, device, ds, out: Path) -> dict:
    """Item 3: the time of log p(x) with K samples over the test set."""
    run = Path(args.eval_run) if args.eval_run else out / "mlp"
    model, cfg, _ = load_checkpoint(run, map_location=str(device))
    test = prepare_split(torch.from_numpy(ds.test), "dynamic-binary", train=False)
    _sync(device)
    t0 = time.perf_counter()
    res = evaluate(model, test, k=args.eval_k, batch_size=100)
    _sync(device)
    return {
        "k": args.eval_k,
        "seconds": time.perf_counter() - t0,
        "log_px": res["log_px"],
        "model": str(run) if args.eval_run else "the 4-epoch mlp run above (time only)",
    }


def main() -> None:
    args = _parser().parse_args()
    torch.set_num_threads(args.threads)  # flush-to-zero is already on: importing vaekit sets it
    device = resolve_device(args.device)
    ds = load_dataset("mnist")
    train01 = torch.from_numpy(ds.train).float().div(255).view(-1, 784)
    test01 = torch.from_numpy(ds.test).float().div(255).view(-1, 784)
    row: dict = {"threads": args.threads, "device": str(device)}
    row["matmul_peak_gflops"] = {"float32": matmul_peak(device, torch.float32)}
    if device.type == "cuda":
        row["matmul_peak_gflops"]["bfloat16"] = matmul_peak(device, torch.bfloat16)
    print(f"matmul peak (GFLOP/s): {row['matmul_peak_gflops']}")
    # The precision the measured training runs in: the reference and vaekit's mlp preset run
    # float32 on CPUs and (vaekit) bf16 autocast on CUDA.
    train_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    row["peak_dtype"] = str(train_dtype)
    if args.peak_presets:
        peak_only(args, device, train_dtype, row)
        return
    ref = row["reference"] = run_reference(
        args,
        device,
        train01,
        test01,
        PeakProbe(device, torch.float32, row["matmul_peak_gflops"]["float32"]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _vaekit_rows(args, device, train_dtype, ref, test01, out, row)
        if not args.skip_eval:
            row["evaluation"] = _evaluation_row(args, device, ds, out)
            print(f"evaluation: {row['evaluation']}")
    row.update(machine=machine(), command=command(), date=now())
    print(f"appended to {append_result('speed', row)}")


if __name__ == "__main__":
    main()
