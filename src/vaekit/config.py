"""Configuration: plain dataclasses, JSON/TOML files, named presets and `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vaekit.errors import VaekitError


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model's architecture (stored in every checkpoint)."""

    family: str = "vae"  # the model registry's name (vaekit.models)
    pixels: str = "dynamic-binary"  # pixel mode (vaekit.data.pixels); picks the likelihood
    arch: str = "mlp"  # mlp | conv (vaekit.nets)
    latent_dim: int = 32
    hidden: list[int] = field(default_factory=lambda: [512, 512])  # mlp widths
    activation: str = "relu"  # mlp hidden activation: relu | silu | gelu | elu | tanh
    channels: int = 32  # conv base width
    blocks: int = 1  # conv residual blocks per stage
    n_mix: int = 5  # logistic-mixture components
    prior: str = "standard-normal"  # standard-normal | vamp | mog (vaekit.priors)
    prior_components: int = 500  # VampPrior pseudo-inputs, or mixture components
    image_shape: list[int] = field(default_factory=lambda: [1, 28, 28])


@dataclass
class TrainConfig:
    """The training run: data, objective and optimisation."""

    data: str = "mnist"
    data_dir: str | None = None
    limit: int | None = None  # use only the first N train/test images (quick runs, tests)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_final: float = 1e-4  # cosine decay from lr to lr_final over the run
    weight_decay: float = 0.0
    grad_clip: float | None = 100.0
    objective: str = "elbo"  # elbo | iwae
    iw_k: int = 1  # samples for the IWAE bound
    beta: float = 1.0  # weight on KL (beta-VAE); 1 gives the true ELBO
    kl_warmup_epochs: float = 0.0  # linear beta ramp from 0
    free_bits: float = 0.0  # nats per latent dim (batch-averaged), Kingma et al. 2016
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"  # cpu | cuda | mps | auto
    bf16: bool = True  # bf16 autocast on CUDA
    cpu_bf16: bool = False  # bf16 autocast on CPUs with native bf16 (AVX512-BF16 or AMX)
    init_output_bias: bool = False  # start the decoder's output bias at the data's mean
    compile: bool = False  # torch.compile the training step
    stream: bool = False  # read `data` as memory-mapped .npy shards through a DataLoader
    workers: int = 2  # DataLoader worker processes when streaming
    eval_batch_size: int = 1000


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        unknown = set(d) - {"model", "train"}
        if unknown:
            raise VaekitError(f"config: unknown section(s) {sorted(unknown)}; use model/train")
        model, train = _migrate(dict(d.get("model", {})), dict(d.get("train", {})))
        return cls(_build(ModelConfig, model, "model"), _build(TrainConfig, train, "train"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _migrate(model: dict[str, Any], train: dict[str, Any]) -> tuple[dict, dict]:
    """Configs written before the pixel mode moved into the model (vaekit <= 0.1 run folders)
    kept it as `train.pixels` and stored the likelihood it implied as `model.likelihood`."""
    if "pixels" in train:
        model.setdefault("pixels", train.pop("pixels"))
    model.pop("likelihood", None)  # implied by the pixel mode
    return model, train


def _build(kind: type, values: dict[str, Any], section: str):
    names = {f.name for f in fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise VaekitError(f"config [{section}]: unknown key(s) {sorted(unknown)}")
    return kind(**values)


_MLP_TRAIN = {
    "epochs": 160,
    "batch_size": 512,
    "lr": 2e-3,
    "lr_final": 5e-5,
    "kl_warmup_epochs": 5,
    "init_output_bias": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    # A minute on a laptop: enough to see digits, not a benchmark.
    "demo": {
        "model": {"hidden": [256, 256], "latent_dim": 16},
        "train": {"epochs": 3, "batch_size": 128, "lr": 2e-3},
    },
    # The reference MLP for dynamically binarized MNIST (benchmarks/mnist_nll.py). Batches of
    # 512 keep the CPU's matmul units busier than smaller ones.
    "mlp": {"model": {"hidden": [512, 512], "latent_dim": 32}, "train": _MLP_TRAIN},
    # `mlp` under a VampPrior of 500 pseudo-inputs (benchmarks/mnist_nll.py compares the two).
    "mlp-vamp": {
        "model": {"hidden": [512, 512], "latent_dim": 32, "prior": "vamp", "prior_components": 500},
        "train": _MLP_TRAIN,
    },
    # Time to quality (benchmarks/speed.py): the PyTorch example's network size and [0,1]-pixel
    # objective, with SiLU units, the output bias started at the mean image, a high decaying
    # learning rate, and bf16 matmuls on CPUs that have them: three epochs.
    "fast": {
        "model": {
            "hidden": [400],
            "latent_dim": 20,
            "activation": "silu",
            "pixels": "expected-binary",
        },
        "train": {
            "epochs": 3,
            "batch_size": 128,
            "lr": 6e-3,
            "lr_final": 1e-4,
            "init_output_bias": True,
            "cpu_bf16": True,
        },
    },
    # Residual convolutional encoder/decoder, with bf16 convolutions on CPUs that have them
    # (benchmarks/speed.py times it); GPUs use bf16 autocast anyway.
    "conv": {
        "model": {"arch": "conv", "channels": 32, "latent_dim": 32},
        "train": {
            "epochs": 20,
            "batch_size": 128,
            "lr": 1e-3,
            "kl_warmup_epochs": 2,
            "cpu_bf16": True,
        },
    },
    # The anomaly detector's default: small and quick, for one class of a few thousand inputs.
    "anomaly": {
        "model": {"hidden": [256, 256], "latent_dim": 16},
        "train": {
            "epochs": 30,
            "batch_size": 64,
            "lr": 1e-3,
            "lr_final": 1e-4,
            "kl_warmup_epochs": 3,
        },
    },
    # 8-bit MNIST under a discretized logistic mixture (exact bits/dim; for compression).
    "mlp-8bit": {
        "model": {"hidden": [512, 512], "latent_dim": 32, "n_mix": 3, "pixels": "8bit"},
        "train": {
            "epochs": 40,
            "batch_size": 128,
            "lr": 1e-3,
            "lr_final": 5e-5,
            "kl_warmup_epochs": 2,
        },
    },
}


def load_config_file(path: str | Path) -> Config:
    """Read a config from a `.json` or `.toml` file with `[model]` and `[train]` sections."""
    path = Path(path)
    try:
        text = path.read_text()
        d = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except FileNotFoundError as e:
        raise VaekitError(f"config file {path} not found") from e
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise VaekitError(f"config file {path} is not valid {path.suffix[1:]}: {e}") from e
    try:
        return Config.from_dict(d)
    except TypeError as e:
        raise VaekitError(f"config file {path}: {e}") from e


def preset(name: str) -> Config:
    """A named preset's config."""
    if name not in PRESETS:
        raise VaekitError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return Config.from_dict(json.loads(json.dumps(PRESETS[name])))


def _coerce(value: str, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value.lower() in ("none", "null") and type(None) in args:
        return None
    if origin in (list, tuple):
        return [_coerce(v, args[0]) for v in value.strip("[]").split(",") if v.strip()]
    if args:  # Optional[X] / X | None
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        return value.lower() in ("1", "true", "yes", "on")
    return hint(value)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` (or a unique `key=value`) overrides, typed by the dataclass."""
    for item in overrides:
        if "=" not in item:
            raise VaekitError(f"override {item!r}: expected key=value, e.g. train.lr=2e-3")
        key, value = item.split("=", 1)
        section, _, name = key.rpartition(".")
        targets = [s for s in ("model", "train") if (not section or s == section)]
        matches = [s for s in targets if name in {f.name for f in fields(getattr(cfg, s))}]
        if len(matches) != 1:
            raise VaekitError(f"override {item!r}: no unique setting named {key!r}")
        obj = getattr(cfg, matches[0])
        hints = typing.get_type_hints(type(obj))
        try:
            setattr(obj, name, _coerce(value, hints[name]))
        except (ValueError, TypeError) as e:
            raise VaekitError(f"override {item!r}: {e}") from e
    return cfg


def replace(cfg: Config, **train_changes: Any) -> Config:
    """A copy of `cfg` with some train settings changed (None values are ignored)."""
    changes = {k: v for k, v in train_changes.items() if v is not None}
    return Config(dataclasses.replace(cfg.model), dataclasses.replace(cfg.train, **changes))
