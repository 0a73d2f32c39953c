"""Configuration: plain dataclasses, JSON/TOML files, named presets and `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vaekit import registry
from vaekit.errors import VaekitError


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model's architecture (stored in every checkpoint)."""

    family: str = "vae"  # the model registry's name (vaekit.models)
    pixels: str = "dynamic-binary"  # pixel mode (vaekit.data.pixels); picks the likelihood
    arch: str = "mlp"  # mlp | conv (vaekit.nets)
    latent_dim: int = 32  # the one-layer VAE's latent size
    latent_groups: list[int] = field(default_factory=list)  # hvae: group sizes, top first
    group_width: int = 256  # hvae: width of the top-down state and per-group networks
    feature_norm: bool = False  # hvae: layer-normalise the bottom-up features (conv encoders)
    hidden: list[int] = field(default_factory=lambda: [512, 512])  # mlp widths
    activation: str = "relu"  # mlp hidden activation: relu | silu | gelu | elu | tanh
    dropout: float = 0.0  # mlp: dropout after each hidden activation while training
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
    # a folder of images of mixed sizes: each resized to cover [height, width] (its shorter
    # side) and centre-cropped; None: the images must share one size
    image_size: list[int] | None = None
    skip_bad: bool = False  # skip unreadable image files (counted in a note) instead of failing
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_final: float = 1e-4  # cosine decay from lr to lr_final over the run
    lr_warmup_steps: int = 0  # linear ramp of the learning rate from 0 over these steps
    weight_decay: float = 0.0
    # decay of an exponential moving average of the weights (Polyak averaging, as VDVAE
    # evaluates with); the average is what is evaluated each epoch and saved as the model,
    # the raw weights are kept for resume. 0: off
    ema: float = 0.0
    grad_clip: float | None = 100.0
    grad_skip: float | None = None  # skip updates whose gradient norm exceeds this
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
    # test images whose ELBO is monitored after each epoch (the first N; None: all of them).
    # A conv model's float32 pass over 10,000 images costs a CPU tens of seconds an epoch.
    monitor_images: int | None = None
    # wall-clock seconds for the whole run (None: no limit): the learning rate then decays
    # over whichever ends first, the epochs or the budget, and training stops at the last
    # epoch that fits (training.TimeBudget)
    time_budget_s: float | None = None


@dataclass
class Config:
    """A run's whole configuration: the model's and the training's."""
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain dicts (what config.json holds)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """A validated config from `to_dict`'s form (older run folders' keys migrated)."""
        unknown = set(d) - {"model", "train"}
        if unknown:
            raise VaekitError(f"config: unknown section(s) {sorted(unknown)}; use model/train")
        model, train = _migrate(dict(d.get("model", {})), dict(d.get("train", {})))
        cfg = cls(_build(ModelConfig, model, "model"), _build(TrainConfig, train, "train"))
        return validate(cfg)

    def to_json(self) -> str:
        """The config as indented JSON."""
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

_HVAE_MODEL = {
    "family": "hvae",
    "hidden": [512, 512],
    "activation": "silu",
    "latent_groups": [16, 32, 64],
    "group_width": 256,
}
_HVAE_TRAIN = {
    "epochs": 850,
    "batch_size": 512,
    "lr": 2e-3,
    "lr_final": 5e-5,
    "kl_warmup_epochs": 10,
    "free_bits": 0.01,
    "grad_clip": 200.0,
    "grad_skip": 3000.0,
    "init_output_bias": True,
}
_HVAE_CONV_MODEL = {
    **_HVAE_MODEL,
    "arch": "conv",
    "channels": 64,
    "blocks": 2,
    "feature_norm": True,
}
_HVAE_CONV_TRAIN = {
    **_HVAE_TRAIN,
    "epochs": 100,
    "batch_size": 256,
    "lr": 1e-3,
    "kl_warmup_epochs": 3,
    "lr_warmup_steps": 500,
    "grad_skip": None,
}

PRESETS: dict[str, dict[str, Any]] = {
    # A minute on a laptop: enough to see digits, not a benchmark.
    "demo": {
        "model": {"hidden": [256, 256], "latent_dim": 16},
        "train": {"epochs": 3, "batch_size": 128, "lr": 2e-3},
    },
    # `make demo`: every use in a few minutes on 2 cores. 8-bit pixels, so that the demo codes
    # the real MNIST test file (a binary model codes binarized images only).
    "demo-8bit": {
        "model": {"hidden": [256, 256], "latent_dim": 16, "pixels": "8bit", "n_mix": 3},
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
    # The top-down hierarchical VAE for dynamically binarized MNIST on a CPU
    # (benchmarks/mnist_nll.py): groups of 16, 32 and 64 latents, top first.
    "hvae": {"model": _HVAE_MODEL, "train": _HVAE_TRAIN},
    # The same hierarchy on 8-bit MNIST under a discretized logistic mixture (compression).
    # Without dropout it overfits: over 200 epochs the test ELBO peaked at epoch 44 and fell
    # while the training loss kept falling, and over these 60 it ends 2.7 nats below its best.
    # Dropout 0.1 in the encoder and decoder MLPs ends 5.8 nats better, still improving
    # (18 minutes on 2 CPU cores; BENCHMARKS.md, session 20).
    "hvae-8bit": {
        "model": {**_HVAE_MODEL, "pixels": "8bit", "n_mix": 3, "dropout": 0.1},
        "train": {**_HVAE_TRAIN, "epochs": 60, "batch_size": 256, "lr": 1e-3},
    },
    # Convolutional bottom-up and output networks around the same top-down path (for GPUs).
    # Measured on CPU runs at 16-32 channels: at full learning rate from the first step the
    # run spiked (a training loss of 34,529) and collapsed (no active units), and the
    # absolute gradient-skip threshold froze it (every update skipped after a spike), so this
    # preset ramps the learning rate in and relies on clipping alone. At 2e-3 on an H200 its
    # posterior still collapsed for three epochs (2 to 4) before it recovered: 1e-3 here.
    "hvae-conv": {"model": _HVAE_CONV_MODEL, "train": _HVAE_CONV_TRAIN},
    # The same conv hierarchy sized for two CPU cores and two hours (benchmarks/mnist_nll.py,
    # session 16): half the channels run 3.3x the steps per second on a CPU without AMX, so
    # 32 epochs fit where 64 channels fit about 11; bf16 on CPUs that have it; the learning
    # rate decays over a 7,000 s budget (the epochs cap it on faster machines), and each
    # epoch's test ELBO is monitored on 2,000 images.
    "hvae-conv-cpu": {
        "model": {**_HVAE_CONV_MODEL, "channels": 32},
        "train": {
            **_HVAE_CONV_TRAIN,
            "epochs": 60,
            "cpu_bf16": True,
            "time_budget_s": 7000.0,
            "monitor_images": 2000,
        },
    },
    # A minute on a laptop: a small hierarchy, enough to see digits and every use work.
    "hvae-demo": {
        "model": {**_HVAE_MODEL, "hidden": [256], "latent_groups": [8, 16], "group_width": 128},
        "train": {"epochs": 3, "batch_size": 128, "lr": 2e-3, "init_output_bias": True},
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
    except (TypeError, VaekitError) as e:
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
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not true or false")
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
    return validate(cfg)


def replace(cfg: Config, **train_changes: Any) -> Config:
    """A copy of `cfg` with some train settings changed (None values are ignored)."""
    changes = {k: v for k, v in train_changes.items() if v is not None}
    return validate(
        Config(dataclasses.replace(cfg.model), dataclasses.replace(cfg.train, **changes))
    )


# ---- validation: every setting has a type (from the dataclass) and a range ---------------

_AT_LEAST_1 = (1, None, False)
_AT_LEAST_0 = (0, None, False)
_POSITIVE = (0, None, True)
# setting -> (lowest, highest, lowest excluded); lists: the range of each item
_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "model.latent_dim": _AT_LEAST_1,
    "model.latent_groups": _AT_LEAST_1,
    "model.group_width": _AT_LEAST_1,
    "model.hidden": _AT_LEAST_1,
    "model.channels": _AT_LEAST_1,
    "model.blocks": _AT_LEAST_0,
    "model.n_mix": _AT_LEAST_1,
    "model.prior_components": _AT_LEAST_1,
    "model.dropout": (0, 0.9, False),
    "model.image_shape": _AT_LEAST_1,
    "train.limit": _AT_LEAST_1,
    "train.image_size": _AT_LEAST_1,
    "train.epochs": _AT_LEAST_1,
    "train.batch_size": _AT_LEAST_1,
    "train.lr": _POSITIVE,
    "train.lr_final": _AT_LEAST_0,
    "train.lr_warmup_steps": _AT_LEAST_0,
    "train.weight_decay": _AT_LEAST_0,
    "train.ema": (0, 0.99999, False),
    "train.grad_clip": _POSITIVE,
    "train.grad_skip": _POSITIVE,
    "train.iw_k": _AT_LEAST_1,
    "train.beta": _AT_LEAST_0,
    "train.kl_warmup_epochs": _AT_LEAST_0,
    "train.free_bits": _AT_LEAST_0,
    "train.seed": _AT_LEAST_0,
    "train.threads": _AT_LEAST_1,
    "train.workers": _AT_LEAST_0,
    "train.eval_batch_size": _AT_LEAST_1,
    "train.monitor_images": _AT_LEAST_1,
    "train.time_budget_s": _POSITIVE,
}


# list settings of a fixed length: (length, what to say otherwise)
_LENGTHS: dict[str, tuple[int, str]] = {
    "model.image_shape": (3, "must be [channels, height, width]"),
    "train.image_size": (2, "must be [height, width]"),
}


def _type_error(hint: Any, value: Any) -> str | None:
    """Why `value` is not of type `hint` (None when it is)."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            return "must be a list"
        errors = [_type_error(typing.get_args(hint)[0], v) for v in value]
        return next((f"each item {e[5:]}" for e in errors if e), None)
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        return (
            None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
        )
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok and math.isfinite(value) else "must be a finite number"
    if hint is str:
        return None if isinstance(value, str) else "must be a string"
    return None


def _range_error(value: Any, lo: float, hi: float | None, lo_open: bool) -> str | None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if v is None:
            continue
        if (v <= lo if lo_open else v < lo) or (hi is not None and v > hi):
            bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
            if hi is not None:
                bound += f" and <= {hi:g}"
            return ("each item must be " if isinstance(value, list) else "must be ") + bound
    return None


def validate(cfg: Config) -> Config:
    """Check every setting's type and range; the first problem is one `VaekitError` line
    naming the setting, its value and what is allowed. Returns `cfg`."""
    choices = registry.choices()
    for section in ("model", "train"):
        obj = getattr(cfg, section)
        hints = typing.get_type_hints(type(obj))
        for f in fields(obj):
            key, value = f"{section}.{f.name}", getattr(obj, f.name)
            problem = _type_error(hints[f.name], value)
            if problem is None and key in _RANGES:
                problem = _range_error(value, *_RANGES[key])
            if problem is None and key in choices and value not in choices[key]:
                problem = f"must be one of {', '.join(choices[key])}"
            length, why = _LENGTHS.get(key, (None, ""))
            if problem is None and None not in (length, value) and len(value) != length:
                problem = why
            if problem:
                raise VaekitError(f"setting {key} = {value!r}: {problem}")
    if problem := registry.MODELS.get(cfg.model.family).config_problem(cfg.model):
        raise VaekitError(f"model config: {problem}")
    return cfg
