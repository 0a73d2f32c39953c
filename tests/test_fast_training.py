"""The parts of the fast-training recipe: activations, the data-started output bias, and bf16
autocast on CPUs (likelihoods and KL stay in float32 under it)."""

import json
import warnings

import pytest
import torch

import vaekit.device as device
import vaekit.training as training
from tests.conftest import tiny_config, tiny_model
from vaekit.checkpoint import load_checkpoint
from vaekit.config import ModelConfig, preset
from vaekit.data.splits import sample_values
from vaekit.models import VAE
from vaekit.objectives import elbo


def test_activation_is_configurable_and_checked():
    cfg = ModelConfig(hidden=[16], latent_dim=2, image_shape=[1, 4, 4], activation="silu")
    model = VAE(cfg)
    assert any(isinstance(m, torch.nn.SiLU) for m in model.modules())
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())
    with pytest.raises(ValueError, match="unknown activation 'swish'.*silu"):
        VAE(ModelConfig(hidden=[16], latent_dim=2, image_shape=[1, 4, 4], activation="swish"))


def test_output_bias_starts_at_the_bernoulli_mean():
    model = tiny_model("static-binary", shape=(1, 3, 3), hidden=(8,))
    mean = torch.linspace(0.0, 1.0, 9).view(1, 3, 3)
    assert model.init_output_bias(mean, torch.ones(1, 3, 3))
    p = torch.sigmoid(model.decoder.head.bias).view(1, 3, 3)
    # clamped away from 0 and 1 so the logits stay finite
    torch.testing.assert_close(p, mean.clamp(1e-3, 1 - 1e-3), atol=1e-6, rtol=1e-5)


def test_output_bias_starts_at_the_gaussian_mean_and_scale():
    model = tiny_model("continuous", shape=(1, 2, 2), hidden=(8,))
    mean, std = torch.tensor([0.1, 0.2, 0.3, 0.4]).view(1, 2, 2), torch.full((1, 2, 2), 0.25)
    assert model.init_output_bias(mean, std)
    m, log_s = model.decoder.head.bias.view(2, 2, 2)
    torch.testing.assert_close(m, mean[0])
    torch.testing.assert_close(log_s.exp(), std[0])


def test_output_bias_of_a_conv_decoder_is_the_spatial_mean():
    model = tiny_model("static-binary", shape=(1, 8, 8), arch="conv")
    mean = torch.full((1, 8, 8), 0.25)
    model.init_output_bias(mean, mean)
    torch.testing.assert_close(model.decoder.net[-1].bias, torch.logit(torch.tensor([0.25])))


def test_logistic_mixture_keeps_its_bias():
    model = tiny_model("8bit", shape=(1, 2, 2), hidden=(8,))
    before = model.decoder.head.bias.clone()
    assert not model.init_output_bias(torch.zeros(1, 2, 2), torch.ones(1, 2, 2))
    torch.testing.assert_close(model.decoder.head.bias, before)


def test_the_values_a_bias_starts_from_are_the_training_pixels(npy_data):
    import numpy as np

    raw = torch.from_numpy(np.load(npy_data))[:, None]
    values = sample_values(raw, "expected-binary", seed=0, n=len(raw))
    mean, std = values.mean(0), values.std(0, correction=0)
    torch.testing.assert_close(mean, raw.float().mean(0) / 255)
    torch.testing.assert_close(std, (raw.float() / 255).std(0, correction=0))


def test_training_with_a_data_started_bias_begins_lower(tmp_path, npy_data):
    """With the bias at the mean image the first epoch's loss is lower than from zero."""
    losses = {}
    for start in (False, True):
        cfg = tiny_config(npy_data, pixels="expected-binary", epochs=1)
        cfg.train.init_output_bias = start
        run = training.train(cfg, tmp_path / str(start), progress=False)
        losses[start] = json.loads((run / "metrics.jsonl").read_text())["train_loss"]
    assert losses[True] < losses[False] - 1.0


def test_elbo_terms_stay_float32_under_bf16_autocast():
    model = tiny_model("static-binary", shape=(1, 6, 6), hidden=(32,))
    x = (torch.rand(16, 1, 6, 6, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    torch.manual_seed(1)
    exact = elbo(model, x)
    torch.manual_seed(1)
    with torch.autocast("cpu", torch.bfloat16):
        half = elbo(model, x)
    assert half.reconstruction.dtype == half.kl.dtype == torch.float32
    # bf16 matmuls change the value a little, not the precision of the 36-pixel sum
    torch.testing.assert_close(half.reconstruction, exact.reconstruction, rtol=0.03, atol=0.3)
    torch.testing.assert_close(half.kl, exact.kl, rtol=0.05, atol=0.05)


def test_cpu_bf16_is_used_only_where_the_cpu_has_it(monkeypatch):
    cfg = preset("fast")
    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.use_bf16(cfg, cpu)
    cfg.train.cpu_bf16 = False
    assert not device.use_bf16(cfg, cpu)
    cfg.train.cpu_bf16 = True
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16 matmul"):
        assert not device.use_bf16(cfg, cpu)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not device.use_bf16(preset("mlp"), cpu)  # float32 by default, silently


def test_bf16_training_run_records_it_and_evaluates(tmp_path, npy_data, monkeypatch):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    cfg = tiny_config(npy_data, pixels="expected-binary", epochs=2)
    cfg.train.cpu_bf16 = True
    run = training.train(cfg, tmp_path / "bf16", progress=False)
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["autocast"] for r in rows] == ["bf16", "bf16"]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    model, _, _ = load_checkpoint(run)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_importing_vaekit_flushes_denormals_on_every_worker_thread():
    """Flush-to-zero is per thread and copied when torch starts its worker threads, so vaekit
    sets it at import; a denormal-heavy Adam step measured 2x slower when it was set later."""
    import subprocess
    import sys

    code = (
        "import vaekit, torch\n"
        "torch.set_num_threads(2)\n"
        "torch.randn(500, 500) @ torch.randn(500, 500)  # starts the worker pool\n"
        "x = torch.full((4_000_000,), 0x007FFFFF, dtype=torch.int32).view(torch.float32)\n"
        "print(((x * 1.0) != 0).float().mean().item())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout.strip()) == 0.0  # every thread treated the denormals as zero


def test_compiled_step_is_one_graph_through_a_kl_warmup(tmp_path, npy_data, monkeypatch):
    """torch.compile traces the whole step once: no graph break at the KL, and no retrace
    when the KL weight changes at every warm-up step (it enters the step as a tensor)."""
    import torch._dynamo

    graphs: list[int] = []

    def counting_backend(gm, example_inputs):
        graphs.append(1)
        return gm.forward

    real_compile = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda fn, **kw: real_compile(fn, backend=counting_backend)
    )
    torch._dynamo.reset()
    cfg = tiny_config(npy_data, epochs=2)
    cfg.train.compile, cfg.train.kl_warmup_epochs = True, 2.0
    run = training.train(cfg, tmp_path / "compiled", progress=False)
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert 0 < rows[0]["beta"] < rows[1]["beta"] < 1  # the weight changed between steps
    assert len(graphs) == 1
    torch._dynamo.reset()
