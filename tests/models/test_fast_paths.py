"""Every speed or memory lever equals the plain path, outputs and gradients, before it is measured."""
import pytest
import timm
import torch

import microdense  # noqa: F401

# Every lever on the CPU here, and on CUDA's kernels (cuDNN convs, CUDA BN) where a GPU is present.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU here: the CUDA form runs on a GPU machine"))]


def _outputs_and_grads(model, x):
    x = x.clone().requires_grad_(True)
    y = model(x)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype).to(y.device))
    return y.detach(), x.grad, {n: p.grad.clone() for n, p in model.named_parameters()}


def _rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def _assert_same(a, b, tol=1e-4):
    """||fast - plain|| / ||plain|| under `tol` for the outputs, the input gradient and all parameter gradients
    (as one vector: some gradients are zero in exact arithmetic, e.g. a bias before a training-mode BN)."""
    assert _rel_err(a[0], b[0]) < tol
    assert _rel_err(a[1], b[1]) < tol
    assert a[2].keys() == b[2].keys()
    flat = [torch.cat([g[n].flatten() for n in sorted(g)]) for g in (a[2], b[2])]
    assert _rel_err(*flat) < tol


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["microdensenet_cifar_tiny", "microdensenet_cifar_base", "resnet20_cifar"])
def test_channels_last_equals_plain(name, device):
    # NOTE: in float64, so that the comparison sees the function computed, not float32 rounding that training-mode
    # BN amplifies through a deep net (fp32 logits agree to ~1e-4 relative; input gradients to a few %).
    torch.manual_seed(0)
    kwargs = dict(zero_init_residual=False) if name.startswith("microdense") else {}  # every branch in play
    plain = timm.create_model(name, **kwargs).double().train().to(device)
    fast = timm.create_model(name, **kwargs).double().train().to(device)
    fast.load_state_dict(plain.state_dict())
    fast = fast.to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64).to(device)
    _assert_same(_outputs_and_grads(fast, x.contiguous(memory_format=torch.channels_last)),
                 _outputs_and_grads(plain, x), tol=1e-9)
    for (name, a), b in zip(plain.named_buffers(), fast.buffers()):  # BN running statistics
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("switch", ["memory_efficient", "grad_checkpointing"])
def test_memory_savers_equal_plain_in_a_whole_network(switch, device, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # CUDA: fp32 convs, as on the CPU
    torch.manual_seed(0)
    plain = timm.create_model("microdensenet_cifar_tiny", zero_init_residual=False).train().to(device)
    kwargs = dict(memory_efficient=True) if switch == "memory_efficient" else {}
    saver = timm.create_model("microdensenet_cifar_tiny", zero_init_residual=False, **kwargs).train().to(device)
    saver.load_state_dict(plain.state_dict())
    if switch == "grad_checkpointing":
        saver.set_grad_checkpointing(True)
    x = torch.randn(4, 3, 32, 32).to(device)
    _assert_same(_outputs_and_grads(saver, x), _outputs_and_grads(plain, x), tol=1e-6)
    for (name, a), b in zip(plain.named_buffers(), saver.buffers()):  # recomputation leaves BN statistics alone
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


def test_turning_grad_checkpointing_off_keeps_the_constructors_memory_efficient():
    from microdense.layers.micro_dense import ConcatConvUnit
    model = timm.create_model("microdensenet_cifar_tiny", memory_efficient=True)
    units = [m for m in model.modules() if isinstance(m, ConcatConvUnit)]
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing and all(u.memory_efficient for u in units)
    model.set_grad_checkpointing(False)
    assert not model.grad_checkpointing and all(u.memory_efficient for u in units)
    plain = timm.create_model("microdensenet_cifar_tiny")
    plain.set_grad_checkpointing(True)
    plain.set_grad_checkpointing(False)
    assert not any(u.memory_efficient for u in plain.modules() if isinstance(u, ConcatConvUnit))
