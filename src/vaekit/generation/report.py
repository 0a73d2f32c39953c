"""One self-contained HTML page per run (`vaekit report RUN_DIR`): configuration, training
curves, evaluation, KL per dimension and group, samples, reconstructions, interpolations,
traversals, a 2-D map of the latent space and the generation metrics (issue 16).

Every plot (matplotlib, Agg) and image grid is embedded as a base64 PNG, so the page needs
no network and no other file; it is written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.errors import VaekitError
from vaekit.evaluation import evaluate, evaluation_table
from vaekit.fileio import atomic_write_text, png_bytes
from vaekit.generation.grids import grid_image
from vaekit.generation.images import interpolate_images, reconstruct_images, sample_images
from vaekit.run import RunFolder

REPORT_NAME = RunFolder.REPORT


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _grid_png(images: torch.Tensor, nrow: int | None = None, scale: int = 2) -> str:
    return _data_url(png_bytes(grid_image(images, nrow, scale)))


def _figure_png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return _data_url(buf.getvalue())


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_png(rows: list[dict[str, Any]]) -> str | None:
    """Loss, reconstruction, KL and test ELBO per epoch."""
    if not rows:
        return None
    plt = _plt()
    epochs = [r["epoch"] for r in rows]
    panels = [
        ("loss (minimised)", ["train_loss"]),
        ("reconstruction E_q log p(x|z) (nats)", ["train_reconstruction", "test_reconstruction"]),
        ("KL (nats)", ["train_kl", "test_kl"]),
        ("ELBO (nats)", ["train_bound", "test_elbo"]),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            ys = [r.get(key) for r in rows]
            if any(y is not None for y in ys):
                ax.plot(epochs, [math.nan if y is None else y for y in ys], label=key)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    return _figure_png(fig)


def kl_png(result: dict[str, Any]) -> str | None:
    """KL per latent dimension (sorted within each group), coloured by group."""
    per_dim = result.get("kl_per_dim")
    if per_dim is None:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3))
    start = 0
    for i, g in enumerate(result["groups"]):
        vals = sorted(per_dim[start : start + g["dims"]], reverse=True)
        ax.bar(range(start, start + len(vals)), vals, label=f"group {i + 1} ({g['kl']:.1f} nats)")
        start += g["dims"]
    ax.set_xlabel("latent dimension (sorted by KL within its group)")
    ax.set_ylabel("KL (nats)")
    ax.legend(fontsize=8)
    return _figure_png(fig)


@torch.no_grad()
def traversals(model, x: torch.Tensor, per_dim: list[float] | None, dims: int = 8, steps: int = 9):
    """Decoded images as each of the most active dimensions moves over -3..3 posterior sds
    around one test image's latent mean (rows: dimensions)."""
    model.eval()
    z0 = model.posterior_means(model.pixels.values(x[:1], train=False))[0]
    order = np.argsort(per_dim)[::-1][:dims] if per_dim is not None else np.arange(dims)
    order = [int(d) for d in order if d < z0.numel()]
    offsets = torch.linspace(-3, 3, steps, device=z0.device)
    z = z0.repeat(len(order) * steps, 1)
    for r, d in enumerate(order):
        z[r * steps : (r + 1) * steps, d] = z0[d] + offsets
    return model.likelihood.display(model.decode(z)), order


@torch.no_grad()
def latent_map_png(model, images: torch.Tensor, labels: np.ndarray | None) -> str:
    """PCA of the test set's latent means, coloured by label."""
    from sklearn.decomposition import PCA

    plt = _plt()
    model.eval()
    means = (
        torch.cat(
            [
                model.posterior_means(model.pixels.values(images[i : i + 1000], train=False)).cpu()
                for i in range(0, len(images), 1000)
            ]
        )
        .double()
        .numpy()
    )
    xy = PCA(2, random_state=0).fit_transform(means) if means.shape[1] > 2 else means
    fig, ax = plt.subplots(figsize=(6, 5))
    if labels is not None:
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=3)
        fig.colorbar(sc, ax=ax, label="label")
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=3)
    ax.set_title("test set latent means, first two principal components", fontsize=9)
    return _figure_png(fig)


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def _evaluation_rows(res: dict[str, Any]) -> list[tuple[str, Any]]:
    """The evaluation table the CLI prints (`evaluation_table`), as label and value cells."""
    rows = [(r.label.strip(), " ".join(r.value.split())) for r in evaluation_table(res)]
    return [("test images", res["n"]), *rows]


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    data_dir: str | None = None,
    quality_n: int = 2000,
    k: int = 0,
    progress: bool = False,
) -> Path:
    """Write RUN_DIR/report.html (or `out`) and return its path."""
    run_dir = Path(run_dir)
    run = RunFolder(run_dir).open(data_dir)
    model, cfg = run.model, run.config
    splits = run.splits()
    test = splits.test
    ds = run.dataset() if not cfg.train.stream else None
    labels = None
    if ds is not None and ds.test_labels is not None:
        labels = ds.test_labels[: len(test)]
    rows = RunFolder(run_dir).read_metrics()
    res = evaluate(model, test, k=k, batch_size=200, seed=0, progress=progress)
    sections: list[str] = []
    sections.append(
        "<h2>Configuration</h2><pre>" + html.escape(json.dumps(cfg.to_dict(), indent=1)) + "</pre>"
    )
    curves = curves_png(rows)
    sections.append(
        "<h2>Training curves</h2>"
        + (f'<img alt="training curves" src="{curves}">' if curves else "<p>no metrics.jsonl</p>")
    )
    sections.append("<h2>Evaluation (test split)</h2>" + _table(_evaluation_rows(res)))
    kl = kl_png(res)
    if kl:
        sections.append(f'<h2>KL per latent dimension</h2><img alt="KL per dimension" src="{kl}">')
    samples = sample_images(model, 64, seed=0)
    sections.append(
        f'<h2>Samples (prior, T = 1)</h2><img alt="samples" src="{_grid_png(samples, 8)}">'
    )
    recon = reconstruct_images(model, test[:32])
    sections.append(
        "<h2>Reconstructions</h2><p>pairs: input, reconstruction</p>"
        f'<img alt="reconstructions" src="{_grid_png(recon, 16)}">'
    )
    pairs = min(8, len(test) // 2)
    if pairs:
        inter = interpolate_images(model, test[:pairs], test[pairs : 2 * pairs], 10)
        sections.append(
            f'<h2>Interpolations</h2><img alt="interpolations" src="{_grid_png(inter, 12)}">'
        )
    trav, dims = traversals(model, test, res.get("kl_per_dim"))
    sections.append(
        "<h2>Traversals of the most active dimensions</h2>"
        f"<p>rows: dimensions {dims} (by KL); columns: −3 … 3 around one test image's mean</p>"
        f'<img alt="traversals" src="{_grid_png(trav, 9)}">'
    )
    sections.append(
        f'<h2>Latent space</h2><img alt="latent map" src="{latent_map_png(model, test, labels)}">'
    )
    sections.append(
        "<h2>Generation metrics</h2>"
        + _quality_section(model, cfg, ds, quality_n, run_dir, splits.train)
    )
    title = html.escape(f"vaekit report: {run_dir.name}")
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 8px;"
        "text-align:left}pre{background:#f6f6f6;padding:8px;max-height:300px;overflow:auto}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>{title}</h1>" + "".join(sections) + "</body></html>"
    )
    path = Path(out) if out is not None else run_dir / REPORT_NAME
    atomic_write_text(path, page)
    return path


def _quality_section(model, cfg, ds, n: int, run_dir: Path, train) -> str:
    from vaekit.generation.quality import FEATURE_NETS, quality_table

    if ds is None or (cfg.train.data not in FEATURE_NETS and ds.train_labels is None):
        return (
            f"<p>No shipped feature network for {html.escape(str(cfg.train.data))} and no "
            "labels to train one: vaekit ships them for mnist and fashion-mnist "
            "(see vaekit quality --help).</p>"
        )
    try:
        table = quality_table(model, ds, cfg.train.data, n=n, run_dir=run_dir, train_images=train)
    except VaekitError as e:
        return f"<p>{html.escape(str(e))}</p>"
    rows = [
        (name, f"FD {q['fd']:.3f}, precision {q['precision']:.3f}, recall {q['recall']:.3f}")
        for name, q in table.items()
    ]
    return f"<p>{n} images each, features of the shipped {cfg.train.data} classifier</p>" + _table(
        rows
    )
