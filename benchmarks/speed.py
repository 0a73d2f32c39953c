"""Training and evaluation speed against the classic PyTorch example VAE, in one run.

    python benchmarks/speed.py [--threads 2] [--ref-epochs 10] [--eval-k 5000]

The reference, written here, mirrors the PyTorch example (MLP 784-400-20, Bernoulli decoder
on [0,1] pixels, Adam lr 1e-3, batch 128, a DataLoader over tensors). Reported:
1. training throughput (images/s) of vaekit's presets and of the reference, as ratios;
2. time-to-quality: wall time until the test loss on [0,1] pixels (the example's metric:
   BCE summed over pixels + KL, per image, one posterior sample) reaches what the reference
   reaches after --ref-epochs epochs;
3. seconds for log p(x) with K=--eval-k over the 10,000 test images (vaekit mlp model);
4. the fraction of this machine's float32 matmul peak (measured here) that training reaches.
Appends one row to benchmarks/results/speed.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402
from vaekit import VAE, preset  # noqa: E402
from vaekit.data import load_dataset, prepare_split, to_values  # noqa: E402
from vaekit.evaluation import evaluate  # noqa: E402
from vaekit.training import Objective, make_optimizer  # noqa: E402


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


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of a large float32 matmul on this machine (the best of a few runs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def mlp_flops_per_image(model: nn.Module) -> float:
    """Training FLOPs per image of an MLP: 3 x (2 x multiply-adds) of its linear layers."""
    macs = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    return 6.0 * macs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ref-epochs", type=int, default=10)
    ap.add_argument("--vaekit-budget-s", type=float, default=120.0)
    ap.add_argument("--eval-k", type=int, default=5000)
    ap.add_argument("--eval-run", help="a trained mlp run for item 3 (skipped without one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    ds = load_dataset("mnist")
    train01 = torch.from_numpy(ds.train).float().div(255).view(-1, 784)
    test01 = torch.from_numpy(ds.test).float().div(255).view(-1, 784)
    row: dict = {"threads": args.threads}
    row["matmul_peak_gflops"] = peak = matmul_peak()
    print(f"float32 matmul peak: {peak:.1f} GFLOP/s")

    # 1-2. the reference, for --ref-epochs epochs, with its test loss after each
    ref = ReferenceVAE()
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(train01), batch_size=128, shuffle=True)
    curve, elapsed, seen = [], 0.0, 0
    for epoch in range(args.ref_epochs):
        ref.train()
        t0 = time.perf_counter()
        for (x,) in loader:
            opt.zero_grad()
            loss = reference_loss(*ref(x), x)
            loss.backward()
            opt.step()
            seen += len(x)
        elapsed += time.perf_counter() - t0
        curve.append((elapsed, reference_test_loss(ref, test01)))
        print(f"reference epoch {epoch + 1}: test loss {curve[-1][1]:.2f} at {elapsed:.1f}s")
    target = curve[-1][1]
    row["reference"] = {
        "images_per_s": seen / elapsed,
        "test_loss_curve": curve,
        "target_loss": target,
        "seconds_to_target": elapsed,
        "peak_fraction": mlp_flops_per_image(ref) * seen / elapsed / 1e9 / peak,
    }

    # vaekit presets: throughput, and time until the reference's final test loss
    for name in ("mlp", "conv"):
        cfg = preset(name)
        cfg.model.image_shape, cfg.model.likelihood = [1, 28, 28], "bernoulli"
        model = VAE(cfg.model)
        objective = Objective(model)
        opt = make_optimizer(model, cfg, torch.device("cpu"))
        data = prepare_split(torch.from_numpy(ds.train), "dynamic-binary", train=True)
        b, n = cfg.train.batch_size, len(data)
        budget = args.vaekit_budget_s if name == "mlp" else 20.0
        elapsed, seen, reached, curve = 0.0, 0, None, []
        while elapsed < budget and reached is None:
            perm = torch.randperm(n)
            t0 = time.perf_counter()
            for i in range(n // b):
                x = to_values(data[perm[i * b : (i + 1) * b]], "dynamic-binary", train=True)
                loss = objective(x)[0]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += b
                if time.perf_counter() - t0 + elapsed > budget:
                    break
            elapsed += time.perf_counter() - t0
            if name == "mlp":
                curve.append((elapsed, vaekit_test_loss(model, test01.view(-1, 1, 28, 28))))
                print(f"vaekit mlp: test loss {curve[-1][1]:.2f} at {elapsed:.1f}s")
                if curve[-1][1] <= target:
                    reached = elapsed
        res = {"images_per_s": seen / elapsed}
        if name == "mlp":
            res.update(
                test_loss_curve=curve,
                seconds_to_target=reached,
                peak_fraction=mlp_flops_per_image(model) * seen / elapsed / 1e9 / peak,
            )
            if reached:
                res["speedup_to_target"] = row["reference"]["seconds_to_target"] / reached
        res["throughput_ratio_vs_reference"] = (
            res["images_per_s"] / row["reference"]["images_per_s"]
        )
        row[f"vaekit_{name}"] = res
        print(
            f"vaekit {name}: {json.dumps({k: v for k, v in res.items() if k != 'test_loss_curve'})}"
        )

    # 3. evaluation time for log p(x) with K samples over the test set
    if args.eval_run:
        from vaekit import load_checkpoint

        model, cfg, _ = load_checkpoint(args.eval_run)
        test = prepare_split(torch.from_numpy(ds.test), "dynamic-binary", train=False)
        t0 = time.perf_counter()
        res = evaluate(model, test, "dynamic-binary", k=args.eval_k, batch_size=100)
        row["evaluation"] = {
            "k": args.eval_k,
            "seconds": time.perf_counter() - t0,
            "log_px": res["log_px"],
        }
        print(f"evaluation: {row['evaluation']}")
    row.update(machine=machine(), command=command(), date=now())
    print(f"appended to {append_result('speed', row)}")


if __name__ == "__main__":
    main()
