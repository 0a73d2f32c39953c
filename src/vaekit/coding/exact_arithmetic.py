"""Arithmetic whose results are the same bits on every machine, for the coder (issue 14).

A bits-back decoder recomputes every probability the encoder used; one differing last bit
desynchronizes the stream. Floating-point results differ between machines for two reasons:
reductions (matrix products, sums) add in an order that depends on threads, batch size,
BLAS kernel and device, and transcendental functions (exp, log, tanh) come from different
libraries (SLEEF, SVML, glibc, CUDA) that round differently. What is the same everywhere is
IEEE 754 float64 +, -, *, / and sqrt, which are correctly rounded, and integer arithmetic.

Inside `ExactArithmetic()` (a torch function mode) every torch call the coder's models make
is computed from those alone:
- matrix products (linear, conv, transposed conv) multiply activations rounded to 23
  significant bits per sample (a power-of-two step from the sample's own largest value) by
  weights with 16 significant bits per output channel (`exact_copy`): every partial sum is
  an integer multiple of one unit below 2^53, so float64 gives the exact result in any
  order, on any BLAS or GPU;
- sums run in int64 after an exact power-of-two scaling chosen per reduced slice;
- exp and log interpolate 2^f and ln(m) tables made with Python's decimal module (correctly
  rounded, platform independent), and the normal CDF is a Hermite spline through knots made
  the same way; sigmoid, tanh, softplus, SiLU, ELU, GELU, softmax and log-sum-exp are built
  from these and correctly rounded operations;
- a call with no such implementation is refused (`InexactOperation`), never run as is.

No step makes a subnormal number, whose handling differs (vaekit flushes them to zero on
the CPU, CUDA does not): exp's argument is clamped to +-700, scalings are powers of two
within 2^+-1000, sums below 2^-1000 are zero, and spline fractions are at least 2^-41.

Results differ from float64 PyTorch by about 1e-8 (tables) and 2^-23 relative to each
sample's largest activation: the coder loses a negligible rate, and files decode anywhere.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import types
from collections.abc import Callable, Sequence
from decimal import Decimal, localcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from vaekit.errors import VaekitError

ARITHMETIC = "exact-1"  # written in file headers: bump when any result below can change
ACT_BITS = 22  # activations entering a product: integers below 2^22 times a power of two per sample
WEIGHT_BITS = 15  # weights: integers of at most 2^15 times a power of two per output channel
MAX_FAN_IN = 2**14  # 2^22 * 2^15 * 2^14 = 2^51 < 2^53: every sum of products is exact
TABLE_BITS = 12  # knots per unit of the 2^f and ln(m) tables
CDF_KNOT_BITS = 7  # knots per unit of the normal CDF spline ...
CDF_LIMIT = 10  # ... over [-10, 10], held at its end values beyond
EXP_LIMIT = 700.0  # exp's argument is clamped here: 2^n stays a normal float64
SHORT_SUM = 64  # sums over at most this many terms run in a fixed order, longer ones in int64
_PI = "3.14159265358979323846264338327950288419716939937510582097494459230781640628620899"


class InexactOperation(VaekitError):
    """A torch call inside `ExactArithmetic` that has no machine-independent implementation."""


# ---- tables, from decimal arithmetic (the same digits on every platform) ----------------


def _to_float(values: Sequence[Decimal]) -> torch.Tensor:
    # float(str) is correctly rounded in CPython on every platform
    return torch.tensor([float(str(v)) for v in values], dtype=torch.float64)


@functools.lru_cache(maxsize=1)
def _cpu_tables() -> dict[str, torch.Tensor]:
    n = 2**TABLE_BITS
    with localcontext() as ctx:
        ctx.prec = 40
        ln2 = Decimal(2).ln()
        exp2 = [(ln2 * i / n).exp() for i in range(n + 1)]  # 2^(i/n)
        ln = [(1 + Decimal(i) / n).ln() for i in range(n + 1)]  # ln(1 + i/n)
        constants = {
            "ln2": ln2,
            "exp_scale": n / ln2,  # x * exp_scale = x log2(e) in units of 1/n
            "half_log_2pi": (2 * Decimal(_PI)).ln() / 2,
        }
        cdf, slope = _normal_knots()
        # the Hermite spline on each interval as a cubic in s in [0, 1): a0 + s(a1 + s(a2 + s a3))
        cubic = [
            (p0, d0, 3 * (p1 - p0) - 2 * d0 - d1, 2 * (p0 - p1) + d0 + d1)
            for p0, p1, d0, d1 in zip(cdf[:-1], cdf[1:], slope[:-1], slope[1:], strict=True)
        ]
    tables = {f"cdf{j}": _to_float([c[j] for c in cubic]) for j in range(4)}
    for name, knots in (("exp2", exp2), ("ln", ln)):
        values = _to_float(knots)
        tables[name] = values[:-1].contiguous()
        tables[name + "_step"] = (values[1:] - values[:-1]).contiguous()
    tables.update({k: _to_float([v]) for k, v in constants.items()})
    return tables


def _normal_knots() -> tuple[list[Decimal], list[Decimal]]:
    """Phi(t) and h * phi(t) at t = -CDF_LIMIT + k h, h = 2^-CDF_KNOT_BITS, to 50 digits.
    From Phi(0) = 1/2, each knot is a Taylor step from the one before: the k-th derivative
    of Phi is (-1)^(k-1) He_(k-1)(t) phi(t) (probabilists' Hermite polynomials), and with
    h = 1/128 and t <= 10, 24 terms leave an error far below 1e-40."""
    per_unit = 2**CDF_KNOT_BITS
    with localcontext() as ctx:
        ctx.prec = 50
        h = Decimal(1) / per_unit
        norm = 1 / (2 * Decimal(_PI)).sqrt()
        powers = [h**k / math.factorial(k) for k in range(25)]
        upper, slope = [Decimal(1) / 2], []  # Phi(t), h phi(t) for t >= 0
        for k in range(CDF_LIMIT * per_unit + 1):
            t = Decimal(k) / per_unit
            density = norm * (-t * t / 2).exp()
            slope.append(density * h)
            if k == CDF_LIMIT * per_unit:
                break
            he_prev, he = Decimal(0), Decimal(1)  # He_-1 (unused), He_0
            step = Decimal(0)
            for j in range(1, 25):  # term j: (-1)^(j-1) He_(j-1)(t) h^j / j!
                step += (he if j % 2 else -he) * powers[j]
                he_prev, he = he, t * he - (j - 1) * he_prev
            upper.append(upper[-1] + density * step)
    cdf = [1 - v for v in upper[:0:-1]] + upper
    return cdf, slope[:0:-1] + slope


@functools.lru_cache(maxsize=8)
def _tables_on(device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in _cpu_tables().items()}


def _tables(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return _tables_on(str(x.device))


def _const(x: torch.Tensor, name: str) -> torch.Tensor:
    return _tables(x)[name]


# ---- elementary functions -----------------------------------------------------------------
#
# Each public function below runs with torch-function handling off, so that called from
# inside `ExactArithmetic` its own steps are not dispatched again.


def raw(fn):
    """Run `fn` with every torch function mode off (its steps are exact as written)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch._C.DisableTorchFunction():
            return fn(*args, **kwargs)

    return wrapper


def pow2(n: torch.Tensor) -> torch.Tensor:
    """2^n for integer-valued n in [-1022, 1023], exactly (built from the float64 bits)."""
    return ((n.long() + 1023) << 52).view(torch.float64)


def _lookup(table: str, x: torch.Tensor, i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation between knots i and i + 1 at fraction t (in place where it can:
    fresh multi-megabyte tensors cost page faults)."""
    tables = _tables(x)
    slope = torch.take(tables[table + "_step"], i).mul_(t)
    return torch.take(tables[table], i).add_(slope)


def _nan_free(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x in float64 with NaN replaced by 0 (a NaN has no portable integer value to index a
    table with), and the NaN mask to put back (None when there is none)."""
    x = x.double()
    nan = torch.isnan(x)
    if bool(nan.any()):
        return x.masked_fill(nan, 0.0), nan
    return x, None


def _with_nan(out: torch.Tensor, nan: torch.Tensor | None) -> torch.Tensor:
    return out if nan is None else out.masked_fill_(nan, math.nan)


@raw
def exp(x: torch.Tensor) -> torch.Tensor:
    """e^x = 2^n 2^(i/4096) 2^(t/4096): n and i from y = x log2(e) 4096 (j = floor(y) =
    4096 n + i), the middle factor and its slope from the table, linear in t = y - j."""
    x, nan = _nan_free(x)
    y = x.clamp(-EXP_LIMIT, EXP_LIMIT).mul_(_const(x, "exp_scale"))
    j = torch.floor(y)
    t = y.sub_(j)
    j = j.long()
    v = _lookup("exp2", x, j & (2**TABLE_BITS - 1), t)
    scale = j.bitwise_right_shift_(TABLE_BITS).add_(1023).bitwise_left_shift_(52)
    return _with_nan(v.mul_(scale.view(torch.float64)), nan)


@raw
def log(x: torch.Tensor) -> torch.Tensor:
    """ln x = (e - 1) ln 2 + ln(2m) for x = m 2^e, m in [1/2, 1): ln(1 + i/4096) and its
    slope from the table, linear in the rest."""
    x, nan = _nan_free(x)
    m, e = torch.frexp(x)
    u = m.sub_(0.5).mul_(2 ** (TABLE_BITS + 1))  # exact: 2m - 1 in knot units
    i = torch.floor(u)
    out = _lookup("ln", x, i.long().clamp_(0, 2**TABLE_BITS - 1), u.sub_(i))
    out = out.add_((e.double() - 1.0) * _const(x, "ln2"))
    if not bool((x > 0).all()) or not bool(torch.isfinite(x).all()):
        out = torch.where(x > 0, out, torch.where(x == 0, -math.inf, math.nan))
        out = out.masked_fill_(torch.isinf(x) & (x > 0), math.inf)
    return _with_nan(out, nan)


@raw
def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Phi(x): a cubic Hermite spline through Phi and its slope at knots 2^-7 apart on
    [-10, 10] (error below 1e-11); Phi(-10) ~ 7.6e-24 and 1 beyond."""
    x, nan = _nan_free(x)
    return _with_nan(finite_normal_cdf(x), nan)


def finite_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """`normal_cdf` for float64 x known to hold no NaN (a NaN would index the table with
    an undefined integer)."""
    t = _tables(x)
    u = x.clamp(-CDF_LIMIT, CDF_LIMIT).add_(CDF_LIMIT).mul_(2**CDF_KNOT_BITS)
    i = torch.floor(u).clamp_(0, t["cdf0"].numel() - 1)
    s = u.sub_(i)
    idx = i.long()
    out = torch.take(t["cdf3"], idx).mul_(s).add_(torch.take(t["cdf2"], idx))
    out = out.mul_(s).add_(torch.take(t["cdf1"], idx)).mul_(s).add_(torch.take(t["cdf0"], idx))
    return out.clamp_(0.0, 1.0)


@raw
def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """1 / (1 + exp(-x)), exactly computed."""
    return exp(-x.double()).add_(1.0).reciprocal_()


@raw
def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x) = max(x, 0) + log(1 + e^-|x|)."""
    x = x.double()
    return x.clamp_min(0.0) + log(1.0 + exp(-x.abs()))


@raw
def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) from the exact exp."""
    x = x.double()
    return 1.0 - 2.0 / (exp(x * 2.0) + 1.0)


@raw
def exact_sum(
    x: torch.Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False
) -> torch.Tensor:
    """The sum of x over `dim`, rounded once: each slice is scaled by a power of two chosen
    from its own largest magnitude (never from other slices: batch composition must not
    matter), rounded to int64 and added exactly."""
    x = x.double()
    dims = tuple(range(x.dim())) if dim is None else (dim,) if isinstance(dim, int) else tuple(dim)
    dims = tuple(d % max(x.dim(), 1) for d in dims)
    if x.numel() == 0 or x.dim() == 0:
        return torch.sum(x, dims if x.dim() else (), keepdim=keepdim)
    if not bool(torch.isfinite(x).all()):  # inf/NaN: the plain sum is the same in any order
        return torch.sum(x, dims, keepdim=keepdim)
    count = math.prod(x.shape[d] for d in dims)
    amax = x.abs().amax(dims, keepdim=True)
    _, e = torch.frexp(amax)  # amax < 2^e
    g = (61 - (count - 1).bit_length() - e.long()).clamp(-1000, 1000)  # n 2^(e+g) <= 2^61
    scaled = torch.round(x * pow2(g)).long()
    total = scaled.sum(dims, keepdim=True).double() * pow2(-g)
    total = total.masked_fill_(total.abs() < 2.0**-1000, 0.0)  # never a subnormal (see top)
    return total if keepdim else total.squeeze(dims) if dims else total


@raw
def fixed_order_sum(x: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """The sum over a short `dim`, added left to right one correctly rounded addition at a
    time: the same bits anywhere, and cheaper than `exact_sum` for a few terms."""
    parts = x.double().unbind(dim)
    total = parts[0].clone()
    for part in parts[1:]:
        total.add_(part)
    return total.unsqueeze(dim) if keepdim else total


@raw
def deterministic_sum(
    x: torch.Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False
) -> torch.Tensor:
    """`fixed_order_sum` over one short dimension, `exact_sum` otherwise."""
    if isinstance(dim, Sequence) and len(dim) == 1:
        dim = dim[0]
    if isinstance(dim, int) and x.dim() > 0 and 1 <= x.shape[dim] <= SHORT_SUM:
        return fixed_order_sum(x, dim, keepdim)
    return exact_sum(x, dim, keepdim)


def _max_keep(x: torch.Tensor, dim: int) -> torch.Tensor:
    m = x.amax(dim, keepdim=True)
    return torch.where(torch.isfinite(m), m, 0.0)


@raw
def log_sum_exp(x: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """log sum exp(x) over `dim`, from the exact exp and log."""
    x = x.double()
    m = _max_keep(x, dim)
    out = m + log(deterministic_sum(exp(x - m), dim, keepdim=True))
    return out if keepdim else out.squeeze(dim)


@raw
def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """exp(x) normalised over `dim`, exactly computed."""
    x = x.double()
    e = exp(x - _max_keep(x, dim))
    return e / deterministic_sum(e, dim, keepdim=True)


@raw
def log_softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x - log sum exp(x) over `dim`, exactly computed."""
    x = x.double()
    shifted = x - _max_keep(x, dim)
    return shifted - log(deterministic_sum(exp(shifted), dim, keepdim=True))


@raw
def gaussian_log_density(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z; loc, scale) per element, exactly computed."""
    r = (z.double() - loc) / scale
    return r * r * -0.5 - log(scale) - _const(r, "half_log_2pi")


# ---- products -----------------------------------------------------------------------------


def _grid_activations(x: torch.Tensor, sample_dims: int = 1) -> torch.Tensor:
    """x in float64 rounded to ACT_BITS significant bits of each sample's largest magnitude
    (a power-of-two step per sample: the first `sample_dims` dimensions index samples, so no
    other sample in the batch changes it)."""
    x = x.double()
    if x.dim() <= sample_dims:
        amax = x.abs()
    else:
        amax = x.abs().amax(tuple(range(sample_dims, x.dim())), keepdim=True)
    _, e = torch.frexp(amax)  # |x| < 2^e
    step = pow2((e.long() - ACT_BITS).clamp(-1000, 1000))
    return (x / step).round_().mul_(step)


def quantize_weight(w: torch.Tensor, channel_dim: int = 0) -> torch.Tensor:
    """w in float64 with at most WEIGHT_BITS + 1 significant bits per output channel (a
    shared power-of-two step): exact arithmetic on the stored values, so every machine
    derives the same weights from the same checkpoint."""
    w = w.detach().double()
    dims = tuple(d for d in range(w.dim()) if d != channel_dim)
    amax = w.abs().amax(dims, keepdim=True) if dims else w.abs()
    _, e = torch.frexp(amax)  # amax < 2^e
    step = pow2((e.long() - WEIGHT_BITS).clamp(-1000, 1000))
    return torch.round(w / step) * step


def _weight(w: torch.Tensor, channel_dim: int) -> torch.Tensor:
    if getattr(w, "_vaekit_exact", False):
        return w
    return quantize_weight(w, channel_dim)


def _check_fan_in(n: int) -> None:
    if n > MAX_FAN_IN:
        raise InexactOperation(
            f"a layer sums {n} products; exact float64 accumulation allows {MAX_FAN_IN}"
        )


@raw
def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """x @ weight.T + bias with quantized operands whose sums are exact."""
    _check_fan_in(weight.shape[-1])
    out = _grid_activations(x, max(x.dim() - 1, 0)) @ _weight(weight, 0).T
    return out if bias is None else out + bias.double()


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


# PyTorch's float64 convolutions on the CPU are an unfolding and matrix products (slow_conv2d,
# slow_conv_transpose2d: no Winograd or FFT, which would round), done image by image where the
# unfolded patches stay in cache; on the grid every partial sum is exact, so they give the same
# bits as the explicit unfold-and-multiply below. Other devices run the explicit one: their
# libraries pick algorithms at run time (cuDNN's include FFT and Winograd).
# tests/test_exact_arithmetic.py holds the two paths equal bit for bit.
def _products(x, weight, channel_dim: int, bias, native, unfolded, *geometry) -> torch.Tensor:
    """A convolution-like layer on the gridded activations and quantized weights, by the
    device's own algorithm on the CPU and by `unfolded` elsewhere, plus the bias."""
    xg, wq = _grid_activations(x), _weight(weight, channel_dim)
    out = (native if xg.device.type == "cpu" else unfolded)(xg, wq, *geometry)
    return out if bias is None else out + bias.double().view(1, -1, 1, 1)


@raw
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """A convolution as exact products of patches with the weights."""
    if groups != 1 or isinstance(padding, str):
        raise InexactOperation("exact conv2d supports groups=1 and integer padding")
    _check_fan_in(weight[0].numel())
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    return _products(
        x, weight, 0, bias, _native_conv2d, _unfolded_conv2d, stride, padding, dilation
    )


def _native_conv2d(xg, wq, stride, padding, dilation) -> torch.Tensor:
    return F.conv2d(xg, wq, None, stride, padding, dilation)


def _unfolded_conv2d(xg, wq, stride, padding, dilation) -> torch.Tensor:
    out_ch, _, kh, kw = wq.shape
    b, _, h, w = xg.shape
    cols = F.unfold(xg, (kh, kw), dilation, padding, stride)  # per image
    out = wq.reshape(out_ch, -1) @ cols  # (B, out, L)
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return out.reshape(b, out_ch, ho, wo)


@raw
def conv_transpose2d(
    x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    """The transposed convolution as exact products folded (summed) into the output. Every
    output element sums at most in_channels * kh * kw exact products of one unit."""
    if groups != 1 or _pair(output_padding) != (0, 0):
        raise InexactOperation("exact conv_transpose2d supports groups=1, output_padding=0")
    in_ch, _, kh, kw = weight.shape
    _check_fan_in(in_ch * kh * kw)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    return _products(
        x,
        weight,
        1,
        bias,
        _native_conv_transpose2d,
        _unfolded_conv_transpose2d,
        stride,
        padding,
        dilation,
    )


def _native_conv_transpose2d(xg, wq, stride, padding, dilation) -> torch.Tensor:
    return F.conv_transpose2d(xg, wq, None, stride, padding, 0, 1, dilation)


def _unfolded_conv_transpose2d(xg, wq, stride, padding, dilation) -> torch.Tensor:
    in_ch, _, kh, kw = wq.shape
    b, _, h, w = xg.shape
    cols = wq.reshape(in_ch, -1).T @ xg.reshape(b, in_ch, h * w)  # (B, out*kh*kw, H*W)
    ho = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + 1
    wo = (w - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + 1
    return F.fold(cols, (ho, wo), (kh, kw), dilation, padding, stride)


def exact_copy(model: nn.Module) -> nn.Module:
    """A float64 copy of `model` whose linear and convolution weights are quantized for
    `ExactArithmetic` (done once, rather than at every call). On the CPU, a network that
    names `exact_rows` runs on at most that many rows at a time (`row_chunked`)."""
    twin = copy.deepcopy(model).double().eval()
    on_cpu = all(p.device.type == "cpu" for p in twin.parameters())
    for module in twin.modules():
        w = getattr(module, "weight", None)
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            channel = 1 if isinstance(module, nn.ConvTranspose2d) else 0
            with torch.no_grad():
                w.copy_(quantize_weight(w, channel))
            w._vaekit_exact = True
        rows = getattr(module, "exact_rows", None)
        if on_cpu and rows:
            row_chunked(module, rows)
    return twin


def row_chunked(module: nn.Module, rows: int) -> None:
    """Make `module` run on at most `rows` rows of its input at a time and join the outputs.
    Under exact arithmetic every row is computed on its own, so the bits are the same; on
    the CPU the float64 activations of a few rows stay in cache, where those of hundreds
    (K particles of a batch) do not: a conv decoder ran 3x faster per row in chunks of 8
    rows than on 800. The module's parameters and their names are untouched (`exact_digest`),
    and a deep copy runs its own weights (the chunking is a method bound to the module)."""
    module._vaekit_rows = rows
    module.forward = types.MethodType(_forward_in_chunks, module)


def _forward_in_chunks(self: nn.Module, x: torch.Tensor):
    forward, rows = type(self).forward, self._vaekit_rows
    if x.shape[0] <= rows:
        return forward(self, x)
    outs = [forward(self, part) for part in x.split(rows)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
    return torch.cat(outs)


def exact_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer of an `exact_copy`: encoder and decoder check
    that they derived the same network."""
    h = hashlib.sha256(ARITHMETIC.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---- the mode -----------------------------------------------------------------------------


def _no_out(kwargs: dict[str, Any]) -> None:
    if kwargs.get("out") is not None:
        raise InexactOperation("out= is not supported in exact arithmetic")


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]):
    def handler(x, *args, **kwargs):
        _no_out(kwargs)
        return fn(x)

    return handler


def _h_add(a, b, *, alpha=1, out=None):
    _no_out({"out": out})
    return a + b if alpha == 1 else a + b * alpha


def _h_sub(a, b, *, alpha=1, out=None):
    _no_out({"out": out})
    return a - b if alpha == 1 else a - b * alpha


def _h_rsub(a, b, *, alpha=1):
    return b - a if alpha == 1 else b - a * alpha


def _tensor_divisor(a, b):
    """b as a tensor on a's device: CUDA divides by a number (or a CPU scalar tensor) as a
    product with its reciprocal, which rounds twice (194 / 255 came out one unit in the
    last place above the CPU's correctly rounded quotient), while a tensor divisor takes
    IEEE division on every device."""
    if isinstance(a, torch.Tensor) and (
        not isinstance(b, torch.Tensor) or (b.dim() == 0 and b.device != a.device)
    ):
        value = b.item() if isinstance(b, torch.Tensor) else b
        return torch.full((), value, dtype=torch.result_type(a, b), device=a.device)
    return b


def _h_div(a, b, *, rounding_mode=None, out=None):
    _no_out({"out": out})
    if rounding_mode is not None:
        raise InexactOperation("division with a rounding mode is not supported")
    return torch.div(a, _tensor_divisor(a, b))


def _h_div_(a, b, *, rounding_mode=None):
    if rounding_mode is not None:
        raise InexactOperation("division with a rounding mode is not supported")
    return a.div_(_tensor_divisor(a, b))


def _h_addcmul(x, t1, t2, *, value=1, out=None):
    _no_out({"out": out})
    prod = t1 * t2
    return x + (prod if value == 1 else prod * value)


def _h_pow(x, exponent, *, out=None):
    _no_out({"out": out})
    if isinstance(exponent, torch.Tensor) or not isinstance(x, torch.Tensor):
        raise InexactOperation("pow with a tensor exponent or a tensor base of a number")
    if exponent == 2:
        return x * x
    if exponent == 1:
        return x * 1
    if exponent == 0.5:
        return torch.sqrt(x)
    if exponent == -1:
        return 1.0 / x
    if exponent == -2:
        return 1.0 / (x * x)
    raise InexactOperation(f"pow with exponent {exponent}")


def _h_sum(x, dim=None, keepdim=False, *, dtype=None, out=None):
    _no_out({"out": out})
    return deterministic_sum(x, dim, keepdim)


def _h_mean(x, dim=None, keepdim=False, *, dtype=None, out=None):
    _no_out({"out": out})
    dims = range(x.dim()) if dim is None else [dim] if isinstance(dim, int) else dim
    return deterministic_sum(x, dim, keepdim) / math.prod(x.shape[d] for d in dims)


def _dim_first(fn):
    def handler(x, dim=None, *args, dtype=None, **kwargs):
        if dim is None:
            raise InexactOperation(f"{fn.__name__} needs an explicit dim")
        return fn(x, dim)

    return handler


def _h_logsumexp(x, dim, keepdim=False, *, out=None):
    _no_out({"out": out})
    if not isinstance(dim, int):
        if len(dim) != 1:
            raise InexactOperation("logsumexp over several dims")
        dim = dim[0]
    return log_sum_exp(x, dim, keepdim)


def _h_silu(x, inplace=False):
    x = x.double()
    return x * sigmoid(x)


def _h_elu(x, alpha=1.0, inplace=False):
    x = x.double()
    return torch.where(x > 0, x, (exp(x) - 1.0) * alpha)


def _h_gelu(x, approximate="none"):
    x = x.double()
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
        return x * 0.5 * (1.0 + tanh(inner))
    return x * normal_cdf(x)


def _h_softplus(x, beta=1.0, threshold=20.0):
    if beta != 1:
        return softplus(x.double() * beta) / beta
    return softplus(x)


def _h_bce_logits(
    logits, target, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None
):
    if weight is not None or pos_weight is not None or reduction != "none":
        raise InexactOperation("binary_cross_entropy_with_logits: only reduction='none'")
    return softplus(logits) - logits.double() * target


def _h_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(normalized_shape), 0))
    x = x.double()
    mean = _h_mean(x, dims, keepdim=True)
    centred = x - mean
    var = _h_mean(centred * centred, dims, keepdim=True)
    out = centred / torch.sqrt(var + eps)
    if weight is not None:
        out = out * weight.double()
    return out if bias is None else out + bias.double()


def _h_rsqrt(x, *, out=None):
    _no_out({"out": out})
    return 1.0 / torch.sqrt(x)


def _h_dropout(x, p=0.5, training=True, inplace=False):
    """Dropout of a model in eval mode is the identity; a training-mode draw is randomness no
    decoder could repeat."""
    if training:
        raise InexactOperation("dropout in training mode draws random masks; code in eval mode")
    return x


def _bind(table: dict, names: Sequence[str], handler, spaces=(torch, torch.Tensor, F)) -> None:
    for name in names:
        for space in spaces:
            fn = getattr(space, name, None)
            if fn is not None:
                table[fn] = handler


# Calls that are exact whatever the machine (data movement, comparisons, selection) or a
# single correctly rounded IEEE operation: run as they are.
_PASS_THROUGH = """
size dim numel shape dtype device is_cuda is_floating_point __len__ __bool__ __index__ __int__
__float__ item tolist numpy __array__ __format__ __repr__ __hash__ __reduce_ex__ __deepcopy__
__getitem__ __setitem__ __contains__ __iter__ view view_as reshape reshape_as flatten unflatten
chunk split unbind cat concat concatenate stack expand expand_as repeat movedim moveaxis
permute transpose t unsqueeze squeeze contiguous clone detach detach_ cpu cuda to float double
long int bool type type_as full full_like zeros zeros_like ones ones_like empty empty_like
arange tensor as_tensor new_zeros new_ones new_full new_empty new_tensor broadcast_tensors
broadcast_to broadcast_shapes where clamp clamp_ clamp_min clamp_max clip relu relu_ hardtanh
abs neg negative round floor ceil trunc sign maximum minimum max min amax amin eq ne lt le gt
ge __eq__ __ne__ __lt__ __le__ __gt__ __ge__ __and__ __or__ __invert__ __xor__ logical_and
logical_or logical_not isfinite isnan isinf any all masked_fill masked_fill_ fill_ copy_
index_select gather narrow select requires_grad_ nan_to_num frexp add mul __add__ __radd__
__iadd__ __mul__ __rmul__ __imul__ sub __sub__ __rsub__ __isub__ __neg__ __abs__
__rtruediv__ sqrt reciprocal square __lshift__ __rshift__
bitwise_left_shift bitwise_right_shift long_ mul_ add_ sub_ numel storage_offset stride
is_contiguous data_ptr untyped_storage element_size __get__ _set_grad_enabled
""".split()


def _build_handlers() -> tuple[dict, set]:
    table: dict = {}
    _bind(table, ["exp"], _unary(exp))
    _bind(table, ["log"], _unary(log))
    _bind(table, ["expm1"], _unary(lambda x: exp(x) - 1.0))
    _bind(table, ["log1p"], _unary(lambda x: log(1.0 + x.double())))
    _bind(table, ["sigmoid"], _unary(sigmoid))
    _bind(table, ["tanh"], _unary(tanh))
    _bind(table, ["logsigmoid"], _unary(lambda x: -softplus(-x.double())))
    _bind(table, ["rsqrt"], _h_rsqrt)
    _bind(table, ["add"], _h_add)
    _bind(table, ["sub", "subtract"], _h_sub)
    _bind(table, ["rsub"], _h_rsub)
    _bind(table, ["div", "divide", "true_divide", "truediv", "__truediv__"], _h_div)
    _bind(table, ["div_", "__itruediv__"], _h_div_)
    _bind(table, ["addcmul"], _h_addcmul)
    _bind(table, ["pow", "__pow__"], _h_pow)
    _bind(table, ["sum"], _h_sum)
    _bind(table, ["mean"], _h_mean)
    _bind(table, ["logsumexp"], _h_logsumexp)
    _bind(table, ["softmax"], _dim_first(softmax))
    _bind(table, ["log_softmax"], _dim_first(log_softmax))
    _bind(table, ["silu"], _h_silu)
    _bind(table, ["elu"], _h_elu)
    _bind(table, ["gelu"], _h_gelu)
    _bind(table, ["softplus"], _h_softplus)
    _bind(table, ["binary_cross_entropy_with_logits"], _h_bce_logits)
    _bind(table, ["layer_norm"], _h_layer_norm)
    _bind(table, ["dropout"], _h_dropout)
    table[F.linear] = linear
    table[F.conv2d] = conv2d
    table[F.conv_transpose2d] = conv_transpose2d
    passing: set = set()
    for name in _PASS_THROUGH:
        for space in (torch, torch.Tensor, F, torch._C.TensorBase, torch._C):
            fn = getattr(space, name, None)
            if fn is not None and fn not in table:
                passing.add(fn)
    return table, passing


def _name(func) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


class ExactArithmetic(TorchFunctionMode):
    """Inside this mode, torch calls give the same bits on every machine, or are refused."""

    def __init__(self) -> None:
        super().__init__()
        self.handlers, self.passing = _handlers()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = self.handlers.get(func)
        if handler is not None:
            return handler(*args, **kwargs)
        if func in self.passing or _name(func).endswith(".__get__"):
            return func(*args, **kwargs)
        raise InexactOperation(
            f"{_name(func)} has no machine-independent implementation for coding; "
            f"this model cannot be coded exactly"
        )


@functools.lru_cache(maxsize=1)
def _handlers() -> tuple[dict, set]:
    return _build_handlers()
