"""Compression's commands: `compress`, `decompress`."""

from __future__ import annotations

import click

from vaekit.checkpoint import load_checkpoint
from vaekit.cli.options import (
    NON_NEGATIVE,
    friendly_errors,
    main,
    output_option,
    run_arg,
)


@main.command("compress")
@run_arg
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True))
@output_option("FILE.vkz", dir_okay=False)
@click.option(
    "--ideal-k",
    type=NON_NEGATIVE,
    default=0,
    show_default=True,
    help="Also estimate -log p(x) by importance sampling with K samples (slow; 0: -ELBO only).",
)
@click.option(
    "--particles",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Importance-weighted bits-back with K particles: codes near the K-sample bound "
    "instead of -ELBO, for K times the network work after the encoder; the first images "
    "use fewer, as the stack allows (format version 6 files).",
)
@click.option(
    "--bits-back-only",
    is_flag=True,
    help="Do not fall back to xz where it codes the input smaller than the model does.",
)
@click.option(
    "--image-size",
    help="A folder of images of another or of mixed sizes: code them resized to cover this "
    "size (32, or HxW) and centre-cropped.",
)
@click.option("--skip-bad", is_flag=True, help="Skip unreadable image files in a folder.")
@friendly_errors
def compress_cmd(
    run_dir, input_path, output, ideal_k, particles, bits_back_only, image_size, skip_bad
) -> None:
    """Losslessly compress an image set (IDX, .npy, image folder) by bits-back coding."""
    from vaekit.coding.files import compress_file
    from vaekit.coding.generic import GENERIC_CODER
    from vaekit.data.sources import ImageOptions, parse_image_size

    model, _, _ = load_checkpoint(run_dir)
    size = parse_image_size(image_size)
    res = compress_file(
        model,
        input_path,
        output,
        progress=True,
        ideal_k=ideal_k,
        particles=particles,
        fallback=not bits_back_only,
        options=ImageOptions(size, skip_bad),
    )
    if size is not None:
        click.echo(
            f"note: the images were resized to {size[0]}x{size[1]} (shorter side, centre crop): "
            "the file holds, and decompress gives, the resized pixels"
        )
    bpd, ideal = res["bits_per_dim"], res["ideal"]
    dims = res["raw_bytes"]
    click.echo(
        f"wrote {output}: {res['images']} images, {res['bytes']:,} bytes, {bpd:.4f} bits/dim "
        f"(raw 8-bit: {dims:,} bytes)"
    )
    coded = 8 * res["payload_bytes"] / dims
    generic = res["coder"] == GENERIC_CODER
    why = f" ({GENERIC_CODER} coded this input smaller than the model)" if generic else ""
    click.echo(
        f"  payload by {res['coder']}{why}: {res['payload_bytes']:,} bytes, {coded:.4f} bits/dim;"
        f" header and framing: {res['header_bytes']:,} bytes"
    )
    line = f"model's ideal on this input: -ELBO {ideal['elbo_bits_per_dim']:.4f} bits/dim"
    if ideal_k:
        line += f", -log p(x) {ideal['bits_per_dim']:.4f} bits/dim (IS, K={ideal_k})"
    if not generic:
        line += f"; coder overhead over -ELBO {coded - ideal['elbo_bits_per_dim']:+.4f}"
    click.echo(line)


@main.command("decompress")
@run_arg
@click.argument("input_path", metavar="FILE.vkz", type=click.Path(exists=True, dir_okay=False))
@output_option("File or folder to write (the original container; a .npy name: an array).")
@friendly_errors
def decompress_cmd(run_dir, input_path, output) -> None:
    """Decode a .vkz file exactly, in the container it came from (IDX, .npy, image folder)."""
    from vaekit.coding.files import decompress_file

    model, _, _ = load_checkpoint(run_dir)
    for note in decompress_file(model, input_path, output, progress=True):
        click.echo(f"note: {note}")
    click.echo(f"wrote {output}")


