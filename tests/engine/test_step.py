import copy

import pytest
import torch

from moco import load_config
from moco.config import ConfigError
from moco.core.moco import MoCo
from moco.device import resolve_device
from moco.encoders.resnet import build_encoder
from moco.engine.step import train_step


def _amp(cfg, device):
    """The autocast dtype and scaler a run of ``cfg`` gets on ``device``."""
    from moco.device import amp_dtype, grad_scaler, resolve_amp

    amp = resolve_amp(cfg.optim.amp.value, device)
    return amp_dtype(amp), grad_scaler(amp)


def _model():
    enc = build_encoder("resnet18", 16, mlp=True, cifar_stem=True, in_chans=1, width=0.125)
    return MoCo(enc, dim=16, queue_size=32, momentum=0.99, temperature=0.2)


def test_bf16_autocast_step_matches_fp32_loss():
    a = _model()
    b = copy.deepcopy(a)
    x_q, x_k = torch.randn(8, 1, 12, 12), torch.randn(8, 1, 12, 12)
    opt_a = torch.optim.SGD(a.encoder_q.parameters(), lr=0.01)
    opt_b = torch.optim.SGD(b.encoder_q.parameters(), lr=0.01)
    g = torch.Generator
    out_a = train_step(a, opt_a, x_q, x_k, generator=g().manual_seed(1))
    out_b = train_step(b, opt_b, x_q, x_k, amp_dtype=torch.bfloat16, generator=g().manual_seed(1))
    assert torch.isfinite(out_b.loss)
    assert out_b.loss.item() == pytest.approx(out_a.loss.item(), rel=0.05)
    assert b.queue.dtype == torch.float32  # keys are stored at full precision


def test_fp16_needs_cuda_and_cuda_needs_a_gpu(monkeypatch):
    cfg = load_config("default", ["optim.amp=fp16"])
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        _amp(cfg, torch.device("cpu"))  # whether or not this machine has a GPU
    if torch.cuda.is_available():
        dtype, scaler = _amp(cfg, torch.device("cuda"))
        assert dtype == torch.float16 and scaler is not None and scaler.is_enabled()
        assert resolve_device("cuda") == torch.device("cuda", 0)
        assert resolve_device("auto").type == "cuda"
    else:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
        assert resolve_device("auto") == torch.device("cpu")
    # the message a machine without a GPU gives, checked on every machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="run.device='cuda:1' but CUDA is not available"):
        resolve_device("cuda:1")
    assert resolve_device("auto") == torch.device("cpu")


def test_channels_last_step_equals_the_contiguous_step():
    a = _model()
    b = copy.deepcopy(a).to(memory_format=torch.channels_last)
    x_q, x_k = torch.randn(8, 1, 12, 12), torch.randn(8, 1, 12, 12)
    opt_a = torch.optim.SGD(a.encoder_q.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.encoder_q.parameters(), lr=0.1)
    g = torch.Generator
    cl = torch.channels_last
    for s in range(2):
        out_a = train_step(a, opt_a, x_q, x_k, generator=g().manual_seed(s))
        out_b = train_step(
            b, opt_b, x_q.contiguous(memory_format=cl), x_k.contiguous(memory_format=cl),
            generator=g().manual_seed(s),
        )  # fmt: skip
        torch.testing.assert_close(out_b.loss, out_a.loss, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-5, msg=name)


def test_amp_auto_resolves_per_device_and_is_recorded(tiny_idx):
    from moco.data.interface import open_data
    from moco.device import fast_bf16, resolve_amp
    from moco.engine.plan import plan_run

    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == ("bf16" if fast_bf16(cpu) else "none")
    assert resolve_amp("none", cpu) == "none" and resolve_amp("bf16", cpu) == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_amp("fp16", cpu)
    d = plan_run(load_config("default"), open_data(str(tiny_idx), 0.1, 0, None, False), cpu)
    assert d.amp == resolve_amp("auto", cpu)  # the default preset asks for auto
