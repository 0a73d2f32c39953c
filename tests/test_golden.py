"""Golden files: checked-in tiny models and the `.vkz` files they wrote. Every file must still
decode to the same images after any change, and today's coder must write the current
version's files byte for byte (a change there means a new format version)."""

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from vaekit.checkpoint import load_checkpoint
from vaekit.coding.bitsback import CodingError
from vaekit.coding.files import compress, decompress

GOLDEN = Path(__file__).parent / "golden"
# files the coder still writes byte for byte: format 2 (float arithmetic, vaekit 0.2 and 0.3;
# written today with arithmetic="float") and format 5 (exact arithmetic, the default)
# (importance-weighted files: format 6 since vaekit 0.5, whose particles grow with the stack;
# plain files of vaekit 0.5 and 0.6 are format 5)
CURRENT = {
    "v0.2-format2": "float",
    "v0.3-format2": "float",
    "v0.4-format5": "exact-1",
    "v0.6-format5": "exact-1",
    "v0.5-format6": "exact-1",
    "v0.6-format6": "exact-1",
}
SUPERSEDED = {"v0.4-format5-static-binary-standard-normal-hvae-k4"}
# name -> SHA-256 of the .vkz (pins the files themselves: a checked-in file must not change)
FILES = {
    "v0.1-format2-static-binary-standard-normal": "516c5d73473f6572",
    "v0.1-format2-8bit-standard-normal": "51afc82b5e8b8f45",
    "v0.2-format2-static-binary-standard-normal": "1b50f7617be2ebfd",
    "v0.2-format2-8bit-standard-normal": "d42dd9c2b4fbad2f",
    "v0.2-format2-static-binary-vamp": "aac79977b18e109b",
    "v0.3-format2-static-binary-standard-normal-hvae": "9cceaa7aa1adf101",
    "v0.3-format2-8bit-standard-normal-bitswap": "e32ebddabe1bd9d1",
    "v0.4-format5-static-binary-standard-normal": "bcdae073da26d393",
    "v0.4-format5-8bit-standard-normal": "43806275d2f4cab2",
    "v0.4-format5-static-binary-vamp": "7e9e6c2b1e41103f",
    "v0.4-format5-static-binary-standard-normal-hvae": "2532584b59e93791",
    "v0.4-format5-8bit-standard-normal-bitswap": "714d5120eccb1316",
    "v0.4-format5-static-binary-standard-normal-hvae-k4": "75a757689275f8dc",
    "v0.5-format6-static-binary-standard-normal-hvae-k4": "e25bb8d6dd64bffe",
    # a conv hierarchy, written by the explicit unfold-and-multiply convolutions (vaekit 0.6);
    # the CPU's own float64 convolutions since must write the same bytes
    "v0.6-format5-static-binary-standard-normal-hvae-conv": "43ce73b1f851ea44",
    # a conv hierarchy with 4 particles, written by vaekit 0.6 at 39b33b1 (the encoder run once
    # per particle, one pass over every row); since, the encoder runs once per image and conv
    # nets run 8 rows at a time, and must write the same bytes
    "v0.6-format6-static-binary-standard-normal-hvae-conv-k4": "c07b5c2f719582fc",
}


def _expected(name: str) -> np.ndarray:
    imgs = np.load(GOLDEN / "images.npy")
    return imgs if "-8bit-" in name else (imgs > 0).astype(np.uint8)


def _float_kernels(name: str) -> bool:
    """Format-2 files were coded with float32 networks: they decode only where the same
    kernels run (FORMAT.md, version 5). The golden ones were made on an Intel Xeon; on an
    AMD EPYC (session 16) none of them decodes, while every exact-arithmetic file does."""
    return "-format2-" in name


def _decode(name: str) -> np.ndarray:
    blob = (GOLDEN / f"{name}.vkz").read_bytes()
    assert hashlib.sha256(blob).hexdigest()[:16] == FILES[name]
    model = load_checkpoint(GOLDEN / f"{name}.safetensors")[0]  # old run folders load too
    return decompress(model, blob)


EXACT = sorted(n for n in FILES if not _float_kernels(n))
FLOAT = sorted(n for n in FILES if _float_kernels(n))
PINNED = sorted(n for n in FILES if n.startswith(tuple(CURRENT)) and n not in SUPERSEDED)


@pytest.mark.parametrize("name", EXACT)
def test_exact_golden_file_decodes_on_every_cpu(name):
    """Exact arithmetic (format 5 and later): no skip, on any machine."""
    assert np.array_equal(_decode(name), _expected(name))


@pytest.mark.parametrize("name", FLOAT)
def test_float_golden_file_decodes_or_is_refused_cleanly(name):
    """A format-2 file decodes to its images where its float kernels run; elsewhere it must
    fail with a clean `CodingError`, never other images (FORMAT.md), and is then skipped."""
    try:
        images = _decode(name)
    except CodingError as e:
        pytest.skip(f"a float-kernel file from another machine's kernels, refused cleanly: {e}")
    assert np.array_equal(images, _expected(name))


def _written(name: str) -> tuple[bytes, np.ndarray, object]:
    model = load_checkpoint(GOLDEN / f"{name}.safetensors")[0]
    arithmetic = CURRENT[name[: name.index("-", name.index("-") + 1)]]
    particles = int(name.rsplit("-k", 1)[1]) if "-k" in name else 1
    images = _expected(name)
    return compress(model, images, arithmetic=arithmetic, particles=particles), images, model


@pytest.mark.parametrize("name", [n for n in PINNED if not _float_kernels(n)])
def test_coder_writes_the_current_golden_bytes(name):
    assert _written(name)[0] == (GOLDEN / f"{name}.vkz").read_bytes()


@pytest.mark.parametrize("name", [n for n in PINNED if _float_kernels(n)])
def test_float_coder_round_trips_on_this_machines_kernels(name):
    blob, images, model = _written(name)
    assert np.array_equal(decompress(model, blob), images)


@pytest.mark.parametrize("name", [n for n in PINNED if _float_kernels(n)])
def test_float_coder_writes_the_golden_bytes_where_its_kernels_run(name):
    """The float coder's bytes are pinned only where the golden file's kernels run."""
    blob = _written(name)[0]
    try:
        _decode(name)
    except CodingError:
        pytest.skip("this CPU's float kernels are not the golden file's (FORMAT.md, version 5)")
    assert blob == (GOLDEN / f"{name}.vkz").read_bytes()


def test_golden_script_makes_the_same_images():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert np.array_equal(mod.images(), np.load(GOLDEN / "images.npy"))
