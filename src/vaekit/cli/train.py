"""`vaekit train`: a new run, or more epochs of one."""

from __future__ import annotations

import sys

import click
import torch

from vaekit import distributed
from vaekit.cli.options import (
    NON_NEGATIVE,
    POSITIVE,
    RegistryChoice,
    friendly_errors,
    main,
)
from vaekit.config import PRESETS, apply_overrides, load_config_file, preset, replace
from vaekit.data.pixels import PIXEL_MODES
from vaekit.data.sources import parse_image_size
from vaekit.errors import VaekitError
from vaekit.registry import DEVICES
from vaekit.training import train


@main.command("train")
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="JSON or TOML config."
)
@click.option("--preset", "preset_name", help=f"Named preset ({', '.join(PRESETS)}); default mlp.")
@click.option("--data", help="mnist, fashion-mnist, or a PATH (IDX, .npy, image folder).")
@click.option("--data-dir", help="Folder that holds named datasets (also: $VAEKIT_DATA).")
@click.option("--pixels", type=click.Choice(PIXEL_MODES.names()), help="How pixels are modelled.")
@click.option(
    "--epochs", type=POSITIVE, help="Total epochs (with --resume: extend the run to this)."
)
@click.option("--out", "out", default="runs/latest", show_default=True, help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--limit", type=POSITIVE, help="Use only the first N training images (quick runs).")
@click.option(
    "--image-size",
    help="A folder of images of mixed sizes: resize each one's shorter side to cover this "
    "size (32, or HxW) and centre-crop.",
)
@click.option("--skip-bad", is_flag=True, default=None, help="Skip unreadable image files.")
@click.option("--seed", type=NON_NEGATIVE)
@click.option("--threads", type=POSITIVE, help="CPU threads for PyTorch.")
@click.option(
    "--device",
    type=RegistryChoice(DEVICES.names),
    help="auto picks CUDA, then MPS, then CPU; bf16 autocast on CUDA.",
)
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    default=None,
    help="torch.compile the training step (opt-in; helps most on GPUs).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any setting, e.g. --set train.lr=2e-3 --set model.latent_dim=64.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--tensorboard",
    type=click.Path(file_okay=False),
    help="Also log to this TensorBoard folder: scalars every epoch, sample and reconstruction "
    "grids every 5 (view with: tensorboard --logdir DIR).",
)
@click.option(
    "--nproc",
    type=POSITIVE,
    default=1,
    show_default=True,
    help="Processes on this node (DistributedDataParallel via torchrun).",
)
@friendly_errors
def train_cmd(
    config_file,
    preset_name,
    data,
    data_dir,
    pixels,
    epochs,
    out,
    resume,
    limit,
    image_size,
    skip_bad,
    seed,
    threads,
    device,
    compile_,
    overrides,
    quiet,
    tensorboard,
    nproc,
) -> None:
    """Train a VAE; writes config.json, metrics.jsonl and checkpoint.safetensors to --out."""
    if nproc > 1 and distributed.world_from_env().size == 1:
        distributed.launch(nproc, distributed.without_option(sys.argv[1:], "--nproc"))
        return
    if resume:
        if config_file or preset_name or overrides:
            raise VaekitError(
                "--resume continues the run's own config; drop --config/--preset/--set"
            )
        _ignored_on_resume(
            data=data,
            data_dir=data_dir,
            pixels=pixels,
            limit=limit,
            image_size=image_size,
            skip_bad=skip_bad,
            seed=seed,
            device=device,
            compile=compile_,
        )
        cfg = None  # the checkpoint's config
    elif config_file and preset_name:
        raise VaekitError("give --config or --preset, not both")
    else:
        cfg = load_config_file(config_file) if config_file else preset(preset_name or "mlp")
        if pixels:
            cfg.model.pixels = pixels
        cfg = replace(
            cfg,
            data=data,
            data_dir=data_dir,
            epochs=epochs,
            limit=limit,
            image_size=None if image_size is None else list(parse_image_size(image_size)),
            skip_bad=skip_bad,
            seed=seed,
            threads=threads,
            device=device,
            compile=compile_,
        )
        cfg = apply_overrides(cfg, list(overrides))
    if resume and threads:
        torch.set_num_threads(threads)
    board = _tensorboard_log(tensorboard, cfg, out) if tensorboard else None
    try:
        run = train(
            cfg, out, resume=resume, progress=not quiet, total_epochs=epochs, on_epoch=board
        )
    finally:
        if board is not None:
            board.close()
    if distributed.world_from_env().is_main:
        click.echo(f"run folder: {run}  (checkpoint: {run / 'checkpoint.safetensors'})")
    distributed.shutdown()


def _ignored_on_resume(**given) -> None:
    """Warn about the flags given to --resume, which continues with the run's own settings."""
    ignored = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
    if ignored:
        click.echo(
            f"warning: --resume continues with the run's own settings; ignored: "
            f"{', '.join(ignored)}",
            err=True,
        )


def _tensorboard_log(log_dir: str, cfg, run_dir: str):
    """The TensorBoard callback, with a few test images of the run's data to reconstruct."""
    from vaekit.checkpoint import checkpoint_config
    from vaekit.data.datasets import load_dataset
    from vaekit.generation.tensorboard import TensorBoardLog

    cfg = cfg if cfg is not None else checkpoint_config(run_dir)
    if not distributed.world_from_env().is_main:
        return None
    if cfg.train.stream:
        from vaekit.data.streaming import open_shards

        test = open_shards(cfg.train.data)[1]
        images = torch.stack([test[i] for i in range(min(32, len(test)))]).numpy()
    else:
        images = load_dataset(cfg.train.data, cfg.train.data_dir).test[:32]
    return TensorBoardLog(log_dir, images)
