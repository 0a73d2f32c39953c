"""Device and precision policy: which device a run uses and whether it computes in bf16."""

from __future__ import annotations

import warnings

import torch

from vaekit.config import Config
from vaekit.errors import VaekitError
from vaekit.registry import DEVICES


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


@DEVICES.register("cpu")
def _cpu() -> torch.device:
    return torch.device("cpu")


@DEVICES.register("cuda")
def _cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise VaekitError("--device cuda: no CUDA device is available here")
    return torch.device("cuda")


@DEVICES.register("mps")
def _mps() -> torch.device:
    return torch.device("mps")


@DEVICES.register("auto")
def _auto() -> torch.device:
    """CUDA, then MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps") if _mps_available() else torch.device("cpu")


def resolve_device(name: str) -> torch.device:
    """The torch device a `train.device` name picks ('auto': CUDA, then MPS, then CPU)."""
    try:
        return DEVICES.get(name)()
    except ValueError as e:
        raise VaekitError(f"--device: {e}") from e


def may_use_cuda(name: str) -> bool:
    """Whether the device name `name` can resolve to a CUDA device."""
    return name in DEVICES and DEVICES.get(name) in (_cuda, _auto)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX), where bf16
    matmuls run about twice as fast as float32; elsewhere they are emulated and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def use_bf16(config: Config, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast on `device` (see `bf16` and `cpu_bf16`)."""
    t = config.train
    if device.type == "cuda":
        return t.bf16
    if device.type == "cpu" and t.cpu_bf16:
        if cpu_has_native_bf16():
            return True
        warnings.warn(
            "train.cpu_bf16: this CPU has no native bf16 matmul (AVX512-BF16 or AMX); "
            "training in float32",
            stacklevel=2,
        )
    return False


def autocast(config: Config, device: torch.device) -> tuple[torch.autocast, bool]:
    """The autocast context of a training step, and whether it is on."""
    bf16 = use_bf16(config, device)
    return torch.autocast(device.type if bf16 else "cpu", torch.bfloat16, enabled=bf16), bf16


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG state of the host and, on CUDA, of `device`: what exact resume needs."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Restore what `rng_state` saved (a CUDA state only onto a CUDA device)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
