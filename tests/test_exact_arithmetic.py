"""Exact arithmetic for the coder (issue 14): results that do not depend on threads, batch
composition or summation order, that stay close to PyTorch's, and refusal of the rest."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from tests.conftest import tiny_model
from vaekit.coding import exact_arithmetic as ex

# SHA-256 of every table and constant the exact path uses. The tables come from Python's
# decimal module, so every platform must produce these bytes; a change here changes files.
TABLES_SHA256 = "abb380757566f2c266ea90730509bfaff82135141efcb8ddf20622f40d5a30ce"


def _tables_digest() -> str:
    h = hashlib.sha256()
    for name, t in sorted(ex._cpu_tables().items()):
        h.update(name.encode())
        h.update(t.numpy().astype("<f8").tobytes())
    return h.hexdigest()


def test_tables_are_the_same_bytes_everywhere():
    assert _tables_digest() == TABLES_SHA256


def test_elementary_functions_are_close_to_the_true_ones():
    x = torch.linspace(-40, 40, 400_001, dtype=torch.float64)
    rel = ((ex.exp(x) - torch.exp(x)) / torch.exp(x)).abs().max()
    assert rel < 5e-9
    pos = torch.logspace(-300, 300, 100_001, dtype=torch.float64)
    assert (ex.log(pos) - torch.log(pos)).abs().max() < 1e-8
    assert (ex.sigmoid(x) - torch.sigmoid(x)).abs().max() < 2e-9
    assert (ex.tanh(x) - torch.tanh(x)).abs().max() < 5e-9
    assert (ex.softplus(x) - F.softplus(x)).abs().max() < 1e-8
    t = torch.linspace(-9.9, 9.9, 100_001, dtype=torch.float64)
    assert (ex.normal_cdf(t) - torch.from_numpy(norm.cdf(t.numpy()))).abs().max() < 1e-11
    # special values as torch has them
    special = torch.tensor([0.0, -1.0, float("inf"), float("nan")], dtype=torch.float64)
    out = ex.log(special)
    assert out[0] == -float("inf") and out[1].isnan() and out[2] == float("inf") and out[3].isnan()
    assert ex.exp(torch.tensor([float("nan")])).isnan().all()
    lo, hi = ex.normal_cdf(torch.tensor([-50.0, 50.0])).tolist()
    assert 0 <= lo < 1e-23 and hi == 1.0  # held at Phi(-10) and Phi(10) beyond the knots


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 300), st.floats(-30, 30, allow_subnormal=False))
def test_sums_do_not_depend_on_order_or_on_other_rows(seed, n, log_scale):
    """`exact_sum` of a row is the same bits whatever order its terms come in and whatever
    other rows (of any magnitude) share the batch."""
    g = torch.Generator().manual_seed(seed)
    row = torch.randn(n, generator=g, dtype=torch.float64) * 2.0**log_scale
    alone = ex.exact_sum(row[None], -1)
    shuffled = ex.exact_sum(row[torch.randperm(n, generator=g)][None], -1)
    batch = torch.cat([torch.randn(5, n, generator=g, dtype=torch.float64) * 1e12, row[None]])
    assert alone.item() == shuffled.item() == ex.exact_sum(batch, -1)[-1].item()
    assert abs(alone.item() - float(np.sum(row.numpy()))) <= 1e-9 * row.abs().sum().item()
    short = ex.deterministic_sum(row[: min(n, 8)][None], -1)
    assert short.item() == ex.fixed_order_sum(row[: min(n, 8)][None], -1).item()


def test_products_are_exact():
    """Linear, conv and transposed conv give the same bits by any algorithm on the gridded
    inputs and the quantized weights: every partial sum is exact, so any order gives it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 300, generator=g)
    w, b = torch.randn(50, 300, generator=g), torch.randn(50, generator=g)
    grid = ex._grid_activations(x)
    assert torch.equal(ex.linear(x, w, b), F.linear(grid, ex.quantize_weight(w), b.double()))
    # the CPU runs PyTorch's own float64 convolutions, other devices an explicit unfolding
    # and matrix product: different orders of the same exact sums (fan-in up to 2,048)
    img = torch.randn(3, 128, 9, 9, generator=g) * 1e3
    grid = ex._grid_activations(img)
    k = torch.randn(6, 128, 3, 3, generator=g)
    for stride, padding, dilation in ((1, 1, 1), (2, 1, 1), (2, 0, 1), (1, 2, 2)):
        ref = ex._unfolded_conv2d(
            grid, ex.quantize_weight(k), *[(v, v) for v in (stride, padding, dilation)]
        )
        assert torch.equal(ex.conv2d(img, k, None, stride, padding, dilation), ref)
        plain = F.conv2d(img.double(), k.double(), None, stride, padding, dilation)
        assert (ref - plain).abs().max() <= 1e-4 * plain.abs().max()
    kt = torch.randn(128, 6, 4, 4, generator=g)
    for stride, padding in ((2, 1), (1, 0)):
        ref = ex._unfolded_conv_transpose2d(
            grid, ex.quantize_weight(kt, 1), (stride, stride), (padding, padding), (1, 1)
        )
        assert torch.equal(ex.conv_transpose2d(img, kt, None, stride, padding), ref)
        plain = F.conv_transpose2d(img.double(), kt.double(), None, stride, padding)
        assert (ref - plain).abs().max() <= 1e-4 * plain.abs().max()
    # the weights keep 16 significant bits: close to the float ones
    assert (ex.quantize_weight(w) - w.double()).abs().max() <= w.abs().max() * 2.0**-15


def test_a_network_gives_the_same_bits_in_any_batch_and_thread_count():
    """The decoder's outputs for one latent vector are identical alone, in batches of 7, 100
    and 1000, and under 1 or 2 threads; PyTorch's own float32 outputs are not compared."""
    model = ex.exact_copy(tiny_model("8bit", latent_dim=6, shape=(1, 12, 12), hidden=(64, 64)))
    z = torch.randn(1000, 6, generator=torch.Generator().manual_seed(1))
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.no_grad(), ex.ExactArithmetic():
                for size in (1, 7, 100, 1000):
                    outs.append(model.decode_params(z[:size])[0])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(o, outs[0]) for o in outs)


def test_exact_copies_run_conv_nets_a_few_rows_at_a_time_with_the_same_bits():
    """On the CPU an exact copy runs a conv encoder and decoder on `exact_rows` rows at a
    time (their float64 activations stay in cache): no convolution sees more rows, and the
    outputs and the digest are those of one pass over all the rows."""
    from vaekit.config import ModelConfig
    from vaekit.models import build_model
    from vaekit.nets.conv import ConvDecoder, ConvEncoder

    cfg = ModelConfig(
        family="hvae", pixels="8bit", image_shape=[1, 8, 8], hidden=[16], latent_groups=[2, 3],
        group_width=16, arch="conv", channels=4, blocks=1, n_mix=2,
    )  # fmt: skip
    torch.manual_seed(0)
    twin = ex.exact_copy(build_model(cfg).eval())
    seen = []
    for m in twin.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    z = torch.randn(50, 5, generator=torch.Generator().manual_seed(1))
    x = torch.randint(0, 256, (50, 1, 8, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), ex.ExactArithmetic():
        chunked = (twin.decode_params(z), *twin.encoder(x.double()))
    assert seen and max(seen) == ConvDecoder.exact_rows == ConvEncoder.exact_rows < 50
    digest = ex.exact_digest(twin)
    twin_copy = copy.deepcopy(twin)  # a copy chunks its own weights' passes, not the original's
    with torch.no_grad():
        for w in twin_copy.decoder.parameters():
            w.zero_()
    with torch.no_grad(), ex.ExactArithmetic():
        zeroed, again = twin_copy.decode_params(z), twin.decode_params(z)
    assert not zeroed.any() and torch.equal(again, chunked[0])
    del twin.decoder.forward, twin.encoder.forward  # back to one pass over every row
    seen.clear()
    with torch.no_grad(), ex.ExactArithmetic():
        whole = (twin.decode_params(z), *twin.encoder(x.double()))
    assert max(seen) == 50
    assert all(torch.equal(a, b) for a, b in zip(chunked, whole, strict=True))
    assert ex.exact_digest(twin) == digest


def test_calls_without_an_exact_implementation_are_refused():
    with ex.ExactArithmetic(), pytest.raises(ex.InexactOperation, match="cumsum"):
        torch.cumsum(torch.ones(3), 0)
    with ex.ExactArithmetic(), pytest.raises(ex.InexactOperation, match="randn"):
        torch.randn(3)
    with ex.ExactArithmetic(), pytest.raises(ex.InexactOperation, match="exponent"):
        torch.ones(3) ** 1.5


def test_a_model_with_dropout_codes_exactly_and_training_dropout_is_refused():
    """Dropout in eval mode is the identity, so a model trained with it codes (it was refused
    as inexact); a training-mode call would draw a mask no decoder can repeat."""
    from vaekit.coding.files import compress, decompress
    from vaekit.config import preset
    from vaekit.models import build_model

    cfg = preset("hvae-8bit").model
    cfg.dropout, cfg.hidden, cfg.group_width, cfg.image_shape = 0.2, [32], 16, [1, 6, 6]
    cfg.latent_groups = [2, 3]
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    x = np.random.default_rng(2).integers(0, 256, (30, 1, 6, 6), dtype=np.uint8)
    for particles in (1, 2):
        assert np.array_equal(decompress(model, compress(model, x, particles=particles)), x)
    with ex.ExactArithmetic():
        kept = F.dropout(torch.ones(3), 0.5, training=False)
        with pytest.raises(ex.InexactOperation, match="training mode"):
            F.dropout(torch.ones(3), 0.5, training=True)
    assert torch.equal(kept, torch.ones(3))


def test_division_by_a_number_reaches_the_kernel_as_a_tensor_on_the_dividends_device():
    """CUDA divides by a number as a product with its reciprocal (194 / 255 came out one
    unit in the last place off on an H200, so 8-bit files written on one device did not
    match the other's); a tensor divisor gets IEEE division everywhere."""
    from torch.overrides import TorchFunctionMode

    class Divisors(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in ("div", "div_") and len(args) > 1:
                self.seen.append(args[1])
            return func(*args, **(kwargs or {}))

    x = torch.arange(256, dtype=torch.float32)
    with Divisors() as outer, ex.ExactArithmetic():
        quotients = [x / 255.0, torch.div(x, 255), x.div(torch.tensor(255.0)), x.clone().div_(255)]
        y = x.clone()
        y /= 255.0
        halves = torch.arange(5) / 2  # an integer dividend still divides truly
    quotients.append(y)
    assert halves.dtype == torch.float32 and halves.tolist() == [0, 0.5, 1, 1.5, 2]
    assert len(outer.seen) == 6
    assert all(isinstance(d, torch.Tensor) and d.device == x.device for d in outer.seen)
    for q in quotients:  # correctly rounded: the float64 quotient rounded once to float32
        assert torch.equal(q, (x.double() / 255).float())
