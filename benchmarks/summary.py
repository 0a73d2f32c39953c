"""The summary table of vaekit's headline numbers, generated from benchmarks/results/*.jsonl.

Each headline names a benchmark, which of its rows count (a preset, a model, a data size)
and the machine; its figure is that of the latest such row, beside the peer measured in the
same run where the benchmark measures one. `--write` puts the table between the
`<!-- summary:begin -->` and `<!-- summary:end -->` markers of README.md (the headlines
marked for it) and BENCHMARKS.md (all of them); tests/test_benchmark_summary.py checks that
both equal what this script makes from the rows as they stand.

    python benchmarks/summary.py           # print the full table
    python benchmarks/summary.py --write   # rewrite README.md's and BENCHMARKS.md's tables
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- summary:begin -->", "<!-- summary:end -->"
Row = dict[str, Any]


@dataclass(frozen=True)
class Headline:
    """One figure: the latest row of `benchmark` that `where` accepts, on `machine`."""

    capability: str
    measure: str
    benchmark: str
    machine: str  # a prefix of the rows' `machine`
    where: Callable[[Row], bool]
    value: Callable[[Row], float]
    fmt: str
    peer: tuple[str, Callable[[Row], float]] | None = None  # (name, its figure in the row)
    better: str = "lower"  # which way is better, for the ratio's sense
    stderr: Callable[[Row], float | None] | None = None
    readme: bool = False
    section: str = ""  # the BENCHMARKS.md / history heading it comes from


def _nll(preset: str) -> Callable[[Row], bool]:
    return lambda r: r.get("preset") == preset and r.get("k") == 5000 and r.get("log_px")


def _coded(pixels: str, family: str, arch: str = "mlp") -> Callable[[Row], bool]:
    """Compression rows of the whole MNIST test set by such a model, with the generic coders
    measured in the same run."""

    def ok(r: Row) -> bool:
        res = r.get("results", {}).get(pixels)
        if r.get("n") != 10000 or not res or not res.get("generic"):
            return False
        m = res.get("model_config", {}).get("model", {})
        return m.get("family") == family and m.get("arch", "mlp") == arch

    return ok


def _bpd(pixels: str) -> Callable[[Row], float]:
    return lambda r: r["results"][pixels]["vaekit"]["bits_per_dim"]


def _generic(pixels: str, coder: str) -> Callable[[Row], float]:
    return lambda r: r["results"][pixels]["generic"][coder]


HEADLINES: list[Headline] = [
    Headline(
        "likelihood",
        "binarized MNIST test log p(x), nats, IS K=5000: `mlp`",
        "mnist_nll",
        "Intel",
        _nll("mlp"),
        lambda r: r["log_px"],
        "{:.2f}",
        better="higher",
        readme=True,
    ),
    Headline(
        "likelihood",
        "binarized MNIST test log p(x), nats, IS K=5000: `mlp-vamp` (VampPrior)",
        "mnist_nll",
        "Intel",
        _nll("mlp-vamp"),
        lambda r: r["log_px"],
        "{:.2f}",
        better="higher",
    ),
    Headline(
        "likelihood",
        "binarized MNIST test log p(x), nats, IS K=5000: `hvae` (110 min on 2 cores)",
        "mnist_nll",
        "Intel",
        _nll("hvae"),
        lambda r: r["log_px"],
        "{:.2f}",
        better="higher",
        stderr=lambda r: r.get("log_px_stderr"),
    ),
    Headline(
        "likelihood",
        "binarized MNIST test log p(x), nats, IS K=5000 on a random subset: "
        "`hvae-conv-cpu` (< 2 h, 2 cores)",
        "mnist_nll",
        "AMD EPYC",
        _nll("hvae-conv-cpu"),
        lambda r: r["log_px"],
        "{:.2f}",
        better="higher",
        stderr=lambda r: r.get("log_px_stderr"),
        readme=True,
    ),
    Headline(
        "compression",
        "8-bit MNIST test set, lossless bits/dim: `mlp-8bit`",
        "compression",
        "Intel",
        _coded("8bit", "vae"),
        _bpd("8bit"),
        "{:.4f}",
        peer=("xz -9e", _generic("8bit", "xz -9e")),
    ),
    Headline(
        "compression",
        "8-bit MNIST test set, lossless bits/dim: `hvae-8bit`",
        "compression",
        "AMD EPYC",
        _coded("8bit", "hvae"),
        _bpd("8bit"),
        "{:.4f}",
        peer=("xz -9e", _generic("8bit", "xz -9e")),
        readme=True,
    ),
    Headline(
        "compression",
        "binarized MNIST test set, lossless bits/dim: `mlp`",
        "compression",
        "Intel",
        _coded("binary", "vae"),
        _bpd("binary"),
        "{:.4f}",
        peer=("bzip2 -9", _generic("binary", "bzip2 -9")),
        readme=True,
    ),
    Headline(
        "compression",
        "binarized MNIST test set, lossless bits/dim: `hvae`",
        "compression",
        "Intel",
        _coded("binary", "hvae"),
        _bpd("binary"),
        "{:.4f}",
        peer=("bzip2 -9", _generic("binary", "bzip2 -9")),
    ),
    Headline(
        "anomaly detection",
        "one-class MNIST, mean AUROC over the 10 digits (default score)",
        "anomaly",
        "Intel",
        lambda r: bool(r.get("one_class_mean")) and r.get("pyod_mean_auroc") is not None,
        lambda r: r["one_class_mean"][r["default_score"]],
        "{:.3f}",
        peer=("PyOD's VAE", lambda r: r["pyod_mean_auroc"]),
        better="higher",
        readme=True,
    ),
    Headline(
        "anomaly detection",
        "MNIST-C-style corruptions of MNIST, mean AUROC over 19 (default score)",
        "anomaly_corruptions",
        "Intel",
        lambda r: "pyod_vae" in r.get("mean_auroc", {}),
        lambda r: r["mean_auroc"][r["default_score"]],
        "{:.3f}",
        peer=("PyOD's VAE", lambda r: r["mean_auroc"]["pyod_vae"]),
        better="higher",
        readme=True,
    ),
    Headline(
        "generation",
        "MNIST samples, Fréchet distance in a shipped classifier's features (10,000)",
        "generation",
        "Intel",
        lambda r: "vaekit hvae, gmm" in r.get("results", {}),
        lambda r: r["results"]["vaekit hvae, gmm"]["fd"],
        "{:.3f}",
        peer=("PyTorch example VAE", lambda r: r["results"]["PyTorch example VAE, prior"]["fd"]),
        readme=True,
    ),
    Headline(
        "training speed",
        "seconds to the PyTorch example's 10-epoch test loss, `fast` (float32)",
        "speed",
        "Intel",
        lambda r: bool(r.get("vaekit_fast_float32", {}).get("seconds_to_target")),
        lambda r: r["vaekit_fast_float32"]["seconds_to_target"],
        "{:.1f}",
        peer=("PyTorch example", lambda r: r["reference"]["seconds_to_target"]),
        readme=True,
    ),
]


def load_rows(benchmark: str) -> list[Row]:
    path = RESULTS / f"{benchmark}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def latest(h: Headline) -> Row:
    """The latest row of the headline's benchmark that it accepts, on its machine."""
    rows = [
        r
        for r in load_rows(h.benchmark)
        if str(r.get("machine", "")).startswith(h.machine) and _accepts(h, r)
    ]
    if not rows:
        raise LookupError(f"no row of {h.benchmark} for {h.measure!r} on {h.machine}")
    return max(rows, key=lambda r: r.get("date", ""))


def _accepts(h: Headline, r: Row) -> bool:
    try:
        return bool(h.where(r))
    except (KeyError, TypeError):
        return False


def _machine(r: Row) -> str:
    name = str(r.get("machine", "")).split(",")[0].replace("(R)", "")
    return name.replace("Intel Xeon Processor", "Intel Xeon")


def summary_rows() -> list[dict[str, str]]:
    """One dict of cells per headline."""
    out = []
    for h in HEADLINES:
        r = latest(h)
        value = h.value(r)
        text = h.fmt.format(value)
        if h.stderr is not None and h.stderr(r):
            text += f" ± {h.stderr(r):.2f}"
        peer = ratio = ""
        if h.peer is not None:
            name, fn = h.peer
            p = fn(r)
            peer = f"{name}: {h.fmt.format(p)}"
            ratio = f"{p / value:.2f}x" if h.better == "lower" else f"{value / p:.2f}x"
        out.append(
            {
                "capability": h.capability,
                "measure": h.measure,
                "vaekit": text,
                "peer": peer,
                "ratio": ratio,
                "machine": _machine(r),
                "date": str(r.get("date", ""))[:10],
                "commit": str(r.get("git_commit", "") or "")[:7] or "(before stamps)",
                "benchmark": h.benchmark,
                "readme": h.readme,
            }
        )
    return out


def markdown_table(rows: list[dict[str, str]], link_prefix: str = "") -> str:
    """The rows as a Markdown table; `link_prefix` links each benchmark's results file."""
    lines = [
        "| | measured | vaekit | peer, same run | vaekit's edge | machine, date, commit |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        where = f"{r['machine']}, {r['date']}, `{r['commit']}`"
        bench = f"`{r['benchmark']}`"
        lines.append(
            f"| {r['capability']} | {r['measure']} ({bench}) | **{r['vaekit']}** | "
            f"{r['peer'] or '—'} | {r['ratio'] or '—'} | {where} |"
        )
    return "\n".join(lines)


def readme_table() -> str:
    return markdown_table([r for r in summary_rows() if r["readme"]])


def benchmarks_table() -> str:
    return markdown_table(summary_rows())


def replace_block(text: str, table: str) -> str:
    """`text` with the table between its summary markers replaced."""
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:a] + "\n" + table + "\n" + text[b:]


def block(text: str) -> str:
    """The table between `text`'s summary markers."""
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help="rewrite README's and BENCHMARKS' tables")
    args = ap.parse_args()
    if not args.write:
        print(benchmarks_table())
        return
    for name, table in (("README.md", readme_table()), ("BENCHMARKS.md", benchmarks_table())):
        path = ROOT / name
        path.write_text(replace_block(path.read_text(), table))
        print(f"wrote the summary table of {path}")


if __name__ == "__main__":
    main()
