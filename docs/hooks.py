"""MkDocs hooks: pages generated from the code, so that they cannot drift from it.

`<!-- config-table -->` becomes the table of every setting (`vaekit.config`): its type,
default, allowed range or registered choices, and the comment beside it in the source.
`<!-- benchmark-summary -->` becomes the summary table of `benchmarks/summary.py`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import io
import sys
import tokenize
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _comments(cls) -> dict[str, str]:
    """The trailing comment (or the comment lines just above) of each dataclass field."""
    source = inspect.getsource(cls)
    out: dict[str, str] = {}
    above: list[str] = []
    lines = source.splitlines()
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    trailing = {t.start[0]: t.string.lstrip("# ") for t in tokens if t.type == tokenize.COMMENT}
    for i, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        name = stripped.split(":", 1)[0]
        if ":" in stripped and name.isidentifier():
            note = trailing.get(i) if not stripped.startswith("#") and i in trailing else None
            out[name] = note or " ".join(above)
        above = []
    return out


def _allowed(key: str) -> str:
    from vaekit import config, registry

    choices = registry.choices()
    if key in choices:
        return ", ".join(f"`{c}`" for c in choices[key])
    if key in config._RANGES:
        lo, hi, lo_open = config._RANGES[key]
        text = f"> {lo:g}" if lo_open else f">= {lo:g}"
        return text + (f", <= {hi:g}" if hi is not None else "")
    return ""


def config_table() -> str:
    from vaekit.config import ModelConfig, TrainConfig

    rows = ["| setting | type | default | allowed | what it is |", "|---|---|---|---|---|"]
    for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
        hints = typing.get_type_hints(cls)
        notes = _comments(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            hint = str(hints[f.name]).replace("typing.", "").replace("<class '", "")
            hint = hint.replace("'>", "").replace("|", "\\|")
            key = f"{section}.{f.name}"
            note = notes.get(f.name, "").replace("|", "\\|")
            rows.append(f"| `{key}` | {hint} | `{default!r}` | {_allowed(key)} | {note} |")
    return "\n".join(rows)


def benchmark_summary() -> str:
    spec = importlib.util.spec_from_file_location("summary", ROOT / "benchmarks" / "summary.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["summary"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod.markdown_table(mod.summary_rows(), link_prefix="../history.md")


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- config-table -->" in markdown:
        markdown = markdown.replace("<!-- config-table -->", config_table())
    if "<!-- benchmark-summary -->" in markdown:
        markdown = markdown.replace("<!-- benchmark-summary -->", benchmark_summary())
    return markdown
