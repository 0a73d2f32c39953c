"""The README runs as written: its Python quickstart (whose asserts check what it prints) and
its command-line quickstart, which must also be `make demo`'s commands line for line. The
commands run on a small data set: the first 1,000 training and 300 test images of MNIST and
Fashion-MNIST, as IDX files in a folder that `$VAEKIT_DATA` names."""

import gzip
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block(marker: str, language: str) -> str:
    found = re.search(rf"<!-- readme-test: {marker} -->\n```{language}\n(.*?)```", README, re.S)
    assert found, f"README has no {language} block marked `readme-test: {marker}`"
    return found.group(1)


def _commands(text: str) -> list[str]:
    """The command lines of a shell block or script, comments and blank lines dropped."""
    lines = []
    for line in text.splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def test_make_demo_runs_the_readme_quickstart_line_for_line():
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    start = demo.index("vaekit train")
    script = [c for c in _commands(demo[start : demo.index("cat <<")])]
    assert script == _commands(_block("quickstart", "bash"))
    assert "sh scripts/demo.sh" in (ROOT / "Makefile").read_text()


def _idx_gz(path: Path, array: np.ndarray) -> None:
    dims = b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = bytes([0, 0, 8, array.ndim]) + dims + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob, mtime=0))


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from vaekit.data import load_dataset

    root = tmp_path_factory.mktemp("data")
    mnist, fashion = load_dataset("mnist"), load_dataset("fashion-mnist")
    for name, ds in (("mnist", mnist), ("fashion-mnist", fashion)):
        _idx_gz(root / f"{name}/train-images-idx3-ubyte.gz", ds.train[:1000, 0])
        _idx_gz(root / f"{name}/train-labels-idx1-ubyte.gz", ds.train_labels[:1000])
        _idx_gz(root / f"{name}/t10k-images-idx3-ubyte.gz", ds.test[:300, 0])
        _idx_gz(root / f"{name}/t10k-labels-idx1-ubyte.gz", ds.test_labels[:300])
    return root


def test_the_readme_cli_quickstart_runs_and_writes_what_it_says(small_data, tmp_path):
    commands = _commands(_block("quickstart", "bash"))
    bindir = Path(sys.executable).parent
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "VAEKIT_DATA": str(small_data), "HOME": str(tmp_path)}
    for command in commands:
        proc = subprocess.run(
            ["sh", "-ec", command], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        words = shlex.split(command)
        for flag in ("--out", "-o"):
            if flag in words and words[0] == "vaekit":
                written = tmp_path / words[words.index(flag) + 1]
                assert written.exists(), f"{command} did not write {written}"
    run = tmp_path / "runs/demo"
    for name in ("checkpoint.safetensors", "config.json", "metrics.jsonl", "report.html"):
        assert (run / name).exists(), name
    for name in ("score_reference.json", "intensity.safetensors"):  # vaekit fit-scores
        assert (run / name).exists(), name
    flagged = (run / "detections/flagged.csv").read_text().splitlines()
    assert len(flagged) > 1  # a header, then Fashion-MNIST images flagged against MNIST


def test_the_readme_python_quickstart_asserts_what_it_prints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _block("python", "python")
    exec(compile(code, "README.md python quickstart", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"ELBO -\d+\.\d, log p\(x\) -\d+\.\d nats, \d\.\d{3} bits/dim", out), out
    assert re.search(r"\d\.\d{3} bits/dim, decoded exactly", out), out
