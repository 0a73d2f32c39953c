"""Sample quality side by side (issue 16): the PyTorch example VAE after 10 epochs, pythae's
VAE, vaekit's `mlp` and the hierarchical `hvae`, each with the prior sampler and the ex-post
Gaussian mixture sampler, scored with the same metric on the same number of images.

    python benchmarks/generation.py --mlp-run RUN_DIR --hvae-run RUN_DIR [--n 10000]
                                    [--epochs 10]

Metric: Fréchet distance, precision and recall (k=3) in the feature space of vaekit's shipped
MNIST classifier, N generated images against the first N MNIST test images, beside the floor
(the first N training images against the same test images). Generated images are decoder
means (Bernoulli probabilities as grey levels) for every model. The mixture sampler is a
10-component full-covariance Gaussian mixture (scikit-learn) fitted to the training set's
posterior means, for every model (pythae's own GaussianMixtureSampler does the same for its
model). The PyTorch example and pythae are trained here, on MNIST's grey training images in
[0, 1] with binary cross-entropy, batch 128, Adam lr 1e-3, `--epochs` epochs. Appends a row
to benchmarks/results/generation.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402
from speed import ReferenceVAE, reference_loss  # noqa: E402
from vaekit import load_checkpoint  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402
from vaekit.data.splits import load_splits  # noqa: E402
from vaekit.generation.images import sample_images  # noqa: E402
from vaekit.generation.quality import (  # noqa: E402
    features,
    load_feature_net,
    quality,
)
from vaekit.generation.samplers import ExPostGMM, expost_gmm, gmm_images  # noqa: E402


def _batches(fn, n: int, batch: int = 1000) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(i, min(batch, n - i)) for i in range(0, n, batch)])


def train_reference(train01: torch.Tensor, epochs: int) -> tuple[ReferenceVAE, float]:
    torch.manual_seed(0)
    ref = ReferenceVAE()
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(train01), batch_size=128, shuffle=True)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        ref.train()
        for (x,) in loader:
            opt.zero_grad()
            reference_loss(*ref(x), x).backward()
            opt.step()
        print(f"PyTorch example, epoch {epoch + 1}/{epochs}", flush=True)
    return ref.eval(), time.perf_counter() - t0


def reference_images(ref: ReferenceVAE, train01: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    dec = lambda z: torch.sigmoid(ref.fc4(torch.relu(ref.fc3(z)))).view(-1, 1, 28, 28)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    prior = _batches(lambda i, b: dec(torch.randn(b, 20, generator=g)), n)
    means = _batches(
        lambda i, b: ref.fc21(torch.relu(ref.fc1(train01[i : i + b].view(-1, 784)))), len(train01)
    )
    gmm = ExPostGMM.fit(means.double().numpy(), 10, seed=0)
    mixture = _batches(lambda i, b: dec(torch.from_numpy(gmm.sample(b, 1.0, i)).float()), n)
    return {"prior": prior, "gmm": mixture}


def pythae_images(
    train01: torch.Tensor, epochs: int, n: int
) -> tuple[dict[str, torch.Tensor], float]:
    from pythae.models import VAE, VAEConfig
    from pythae.pipelines import TrainingPipeline
    from pythae.samplers import (
        GaussianMixtureSampler,
        GaussianMixtureSamplerConfig,
        NormalSampler,
    )
    from pythae.trainers import BaseTrainerConfig

    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=16, reconstruction_loss="bce"))
    with tempfile.TemporaryDirectory() as out:
        cfg = BaseTrainerConfig(
            output_dir=out,
            num_epochs=epochs,
            learning_rate=1e-3,
            per_device_train_batch_size=128,
            per_device_eval_batch_size=1000,
            no_cuda=True,
            seed=0,
        )
        t0 = time.perf_counter()
        TrainingPipeline(training_config=cfg, model=model)(train_data=train01.numpy())
        seconds = time.perf_counter() - t0
    model.eval()
    normal = NormalSampler(model=model)
    gmm = GaussianMixtureSampler(
        model=model, sampler_config=GaussianMixtureSamplerConfig(n_components=10)
    )
    gmm.fit(train_data=train01.numpy())
    out = {}
    for name, sampler in (("prior", normal), ("gmm", gmm)):
        torch.manual_seed(0)
        out[name] = _batches(lambda i, b, s=sampler: s.sample(num_samples=b, batch_size=b).cpu(), n)
    return out, seconds


def vaekit_images(run: str, n: int) -> dict[str, torch.Tensor]:
    model, cfg, _ = load_checkpoint(run)
    model.eval()
    train = load_splits(cfg, torch.device("cpu")).train
    gmm = expost_gmm(model, run, train, seed=0)
    return {
        "prior": _batches(lambda i, b: sample_images(model, b, seed=i).cpu(), n),
        "gmm": _batches(lambda i, b: gmm_images(model, gmm, b, seed=i).cpu(), n),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mlp-run", required=True, help="a run of vaekit's mlp preset on MNIST")
    ap.add_argument("--hvae-run", help="a run of vaekit's hvae preset on MNIST")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mnist = load_dataset("mnist")
    n = min(args.n, len(mnist.test))
    train01 = torch.from_numpy(mnist.train).float() / 255.0
    net = load_feature_net("mnist")
    real = features(net, mnist.test[:n])
    results: dict[str, dict] = {
        "real: training vs test (floor)": quality(real, mnist.train[:n], net).as_dict()
    }
    ref, ref_s = train_reference(train01, args.epochs)
    sets = {"PyTorch example VAE": reference_images(ref, train01, n)}
    py, py_s = pythae_images(train01, args.epochs, n)
    sets["pythae VAE"] = py
    sets["vaekit mlp"] = vaekit_images(args.mlp_run, n)
    if args.hvae_run:
        sets["vaekit hvae"] = vaekit_images(args.hvae_run, n)
    for model, images in sets.items():
        for sampler, ims in images.items():
            q = quality(real, ims, net).as_dict()
            results[f"{model}, {sampler}"] = q
            print(
                f"{model:<22s} {sampler:<6s} FD {q['fd']:8.3f}  precision "
                f"{q['precision']:.3f}  recall {q['recall']:.3f}",
                flush=True,
            )
    fd = {k: v["fd"] for k, v in results.items()}
    best = min(v for k, v in fd.items() if k.startswith("vaekit"))
    ratios = {
        "best_vaekit_fd_over_pytorch_example_prior": best / fd["PyTorch example VAE, prior"],
        "mlp_gmm_fd_change_vs_prior": fd["vaekit mlp, gmm"] / fd["vaekit mlp, prior"] - 1.0,
    }
    print(json.dumps(ratios))
    row = {
        "n": n,
        "results": results,
        "ratios": ratios,
        "trained_here_seconds": {"PyTorch example VAE": ref_s, "pythae VAE": py_s},
        "epochs_of_trained_here": args.epochs,
        "runs": {"vaekit mlp": args.mlp_run, "vaekit hvae": args.hvae_run},
        "feature_net": "vaekit/feature_weights/mnist.safetensors",
        "machine": machine(),
        "command": command(),
        "date": now(),
    }
    print(f"appended to {append_result('generation', row)}")


if __name__ == "__main__":
    main()
