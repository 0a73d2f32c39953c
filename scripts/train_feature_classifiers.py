"""Train the feature classifiers that vaekit ships for its sample-quality metric.

    python scripts/train_feature_classifiers.py [--datasets mnist fashion-mnist] [--epochs N]

For each data set: a `FeatureClassifier` trained on its training split (random shifts of up to
2 pixels; and mirror images for Fashion-MNIST), 10 epochs for MNIST and 20 for Fashion-MNIST,
weights rounded to float16 and saved to src/vaekit/feature_weights/NAME.safetensors
with their test accuracy (measured with the rounded weights) in the file's metadata. The
script prints each file's SHA-256 for `vaekit.generation.quality.FEATURE_NETS`. Seeded; on
2 CPU cores each data set takes a few minutes per epoch.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from vaekit.data import load_dataset  # noqa: E402
from vaekit.nets.feature_classifier import FeatureClassifier  # noqa: E402

OUT = ROOT / "src" / "vaekit" / "feature_weights"


# mirror images are still clothes, but not digits
FLIPS = {"fashion-mnist": True}
EPOCHS = {"mnist": 10, "fashion-mnist": 20}


def _flipped(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Half of the images (at random) mirrored left to right."""
    flip = torch.rand(len(x), generator=g) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _shifted(x: torch.Tensor, g: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Each image moved by up to `pad` pixels in each direction (zero fill)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h)[None]).view(n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w)[None]).view(n, 1, 1, w)
    return padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols]


@torch.no_grad()
def accuracy(net: FeatureClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(x), 1000):
        correct += int((net(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum())
    return correct / len(x)


def train_one(name: str, epochs: int, seed: int) -> None:
    data = load_dataset(name)
    x = torch.from_numpy(data.train).float() / 255.0
    y = torch.from_numpy(data.train_labels).long()
    xt = torch.from_numpy(data.test).float() / 255.0
    yt = torch.from_numpy(data.test_labels).long()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = FeatureClassifier(channels=x.shape[1], classes=int(y.max()) + 1)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=5e-4)
    batch = 128
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            xb = _shifted(x[idx], g)
            if FLIPS.get(name, False):
                xb = _flipped(xb, g)
            loss = F.cross_entropy(net(xb), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        print(
            f"{name} epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}, test accuracy "
            f"{accuracy(net, xt, yt):.4f} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    weights = {k: v.detach().half().contiguous() for k, v in net.state_dict().items()}
    rounded = FeatureClassifier(channels=x.shape[1], classes=int(y.max()) + 1)
    rounded.load_state_dict({k: v.float() for k, v in weights.items()})
    acc = accuracy(rounded, xt, yt)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.safetensors"
    meta = {
        "dataset": name,
        "test_accuracy": f"{acc:.4f}",
        "epochs": str(epochs),
        "seed": str(seed),
        "script": "scripts/train_feature_classifiers.py",
    }
    save_file(weights, str(path), metadata=meta)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"{path}: {path.stat().st_size} bytes, test accuracy {acc:.4f}, sha256 {digest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    ap.add_argument("--epochs", type=int, help="[10 for mnist, 20 for fashion-mnist]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.datasets:
        train_one(name, args.epochs or EPOCHS.get(name, 10), args.seed)


if __name__ == "__main__":
    main()
