"""What the commands share: the `vaekit` group, argument types, errors as one line."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Iterable

import click
import torch
from typing_extensions import override

from vaekit.errors import DataNote, VaekitError
from vaekit.run import OpenRun, RunFolder


class RegistryChoice(click.Choice):
    """A choice among a registry's names, read when the command runs: an entry registered
    after import (a plugin's) is offered too."""

    def __init__(self, names: Callable[[], Iterable[str]]):
        self._names = names
        super().__init__(())

    @property
    @override
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ sets it; the registry decides
        pass


# Ranges are checked by click before any work starts: a bad value is one line and exit 2.
POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)
FRACTION = click.FloatRange(0.0, 1.0, min_open=True, max_open=True)


def friendly_errors(fn):
    """Print a VaekitError as one clear message and exit 1, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VaekitError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted; the last checkpoint (if any) is intact", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vaekit")
def main() -> None:
    """Variational autoencoders: train, evaluate, and use them."""
    warnings.formatwarning = _one_line


def _one_line(message, category, filename, lineno, line=None) -> str:
    """A warning as the command line prints it: one line, no source location."""
    return f"{'note' if issubclass(category, DataNote) else 'warning'}: {message}\n"


def load_run(run_dir: str, data_dir: str | None, limit: int | None):
    """A run's model, config and data splits (on the CPU), as a command opens them."""
    run: OpenRun = RunFolder(run_dir).open(data_dir, limit)
    return run.model, run.config, run.splits(torch.device("cpu"))


run_arg = click.argument("run_dir", type=click.Path(exists=True, file_okay=False))


def output_option(help: str, **path: bool):
    """The required output of compress/decompress: `-o`, `--output`, or `--out` as every
    other command spells it."""
    return click.option(
        "-o", "--output", "--out", "output", required=True, type=click.Path(**path), help=help
    )


data_dir_opt = click.option("--data-dir", help="Where the run's dataset lives, if moved.")


