"""README's and BENCHMARKS.md's summary tables equal what benchmarks/summary.py makes from
the result rows: the latest row per benchmark, preset (or model) and machine."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("summary", ROOT / "benchmarks" / "summary.py")
summary = importlib.util.module_from_spec(spec)
sys.modules["summary"] = summary  # its dataclasses look their module up
spec.loader.exec_module(summary)


@pytest.mark.parametrize(
    "name, table",
    [("README.md", summary.readme_table), ("BENCHMARKS.md", summary.benchmarks_table)],
)
def test_the_summary_tables_are_the_rows_as_they_stand(name, table):
    text = (ROOT / name).read_text()
    assert summary.block(text) == table(), (
        f"{name}'s summary table is stale: run `python benchmarks/summary.py --write`"
    )


def test_every_number_in_the_readme_table_is_its_rows():
    """Each figure in README's table, parsed back, is the latest accepted row's value."""
    rows = [line for line in summary.block((ROOT / "README.md").read_text()).splitlines()[2:]]
    headlines = [h for h in summary.HEADLINES if h.readme]
    assert len(rows) == len(headlines)
    for line, h in zip(rows, headlines, strict=True):
        shown = float(re.search(r"\*\*(-?[\d.]+)", line).group(1))
        assert shown == pytest.approx(h.value(summary.latest(h)), abs=0.51 * 10 ** -_places(h))


def _places(h) -> int:
    return int(re.search(r"\.(\d)f", h.fmt).group(1))


def test_latest_means_the_newest_accepted_row_on_that_machine(tmp_path, monkeypatch):
    rows = [
        {"preset": "mlp", "k": 5000, "log_px": -90.0, "machine": "Intel X", "date": "2026-01-02"},
        {"preset": "mlp", "k": 5000, "log_px": -88.0, "machine": "Intel X", "date": "2026-01-03"},
        {"preset": "mlp", "k": 100, "log_px": -80.0, "machine": "Intel X", "date": "2026-01-04"},
        {"preset": "mlp", "k": 5000, "log_px": -70.0, "machine": "AMD Y", "date": "2026-01-05"},
    ]
    (tmp_path / "mnist_nll.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(summary, "RESULTS", tmp_path)
    assert summary.latest(summary.HEADLINES[0])["log_px"] == -88.0
