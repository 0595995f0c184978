import copy

import pytest
import torch

from moco import load_config
from moco.config import ConfigError
from moco.core.model import MoCo
from moco.encoders.resnet import build_encoder
from moco.engine.step import train_step
from moco.engine.train import _amp, resolve_device


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


def test_fp16_needs_cuda_and_cuda_needs_a_gpu():
    cfg = load_config("default", ["optim.amp=fp16"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
            _amp(cfg, torch.device("cpu"))
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
