"""Shared batch statistics, the fused consumer kernel and the concatenation: each the same function as the reference
path (outputs, input and parameter gradients, running buffers after several steps; float64), in every setting."""
import copy
import itertools
import json
import os
import subprocess
import sys

import pytest
import timm
import torch

import microdense  # noqa: F401
from microdense.layers import MicroDenseBlock, MicroDenseBlockCfg
from microdense.layers import concat_norm, fused
from microdense.layers.concat_norm import cat_channels

PATHS = ["fused", "eager"]  # the consumer's scale-shift-ReLU: the compiled CPU kernel, or PyTorch's own operators


@pytest.fixture(params=PATHS)
def consumer_path(request, monkeypatch):
    if request.param == "fused":
        assert fused.fused_kernels() is not None, "the fused kernel did not build (see the warning)"
    else:
        monkeypatch.setattr(concat_norm, "takes", lambda *args: False)
    return request.param


def _steps(block, inputs, seed=0):
    """Outputs, input gradients and parameter gradients (summed) over `inputs`, one step each."""
    outs, grads = [], []
    for i, x in enumerate(inputs):
        x = x.clone().requires_grad_(True)
        torch.manual_seed(seed + i)  # the same drop-path draws on both sides
        y = block(x)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(i), dtype=y.dtype))
        outs.append(y.detach())
        grads.append(x.grad)
    return outs, grads, {n: p.grad for n, p in block.named_parameters()}


SETTINGS = list(itertools.product(("micro_dense", "dense", "residual"), (True, False), (False, True), (0.0, 0.3),
                                  (False, True)))


@pytest.mark.parametrize("aggregation, preact, memory_efficient, drop_path, channels_last", SETTINGS)
def test_shared_statistics_equal_the_reference_path(consumer_path, aggregation, preact, memory_efficient,
                                                    drop_path, channels_last):
    torch.manual_seed(0)
    cfg = MicroDenseBlockCfg(base_width=8, group_width=4, aggregation=aggregation, preact=preact,
                             zero_init_residual=False)
    shared = MicroDenseBlock(16, 24, cfg, stride=2, drop_path=drop_path, memory_efficient=memory_efficient).double()
    reference = copy.deepcopy(shared)
    reference.share_batch_stats = False
    assert shared.share_batch_stats == (preact and aggregation != "residual")  # where a feature has consumers
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    shared, reference = shared.to(memory_format=fmt), reference.to(memory_format=fmt)
    inputs = [torch.randn(4, 16, 8, 8, dtype=torch.float64).contiguous(memory_format=fmt) for _ in range(3)]
    (y_s, gx_s, gp_s), (y_r, gx_r, gp_r) = _steps(shared, inputs), _steps(reference, inputs)
    for a, b in zip(y_s + gx_s, y_r + gx_r):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for name in gp_r:
        torch.testing.assert_close(gp_s[name], gp_r[name], rtol=1e-10, atol=1e-12, msg=name)
    for (name, a), b in zip(reference.named_buffers(), shared.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)
    shared.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(shared(inputs[0]), reference(inputs[0]), rtol=1e-12, atol=1e-12)


def test_shared_statistics_follow_each_bn_own_momentum_and_cumulative_average(consumer_path):
    torch.manual_seed(0)
    shared = MicroDenseBlock(8, 8, MicroDenseBlockCfg(base_width=4, group_width=2, zero_init_residual=False)).double()
    for i, layer in enumerate(shared.layers):
        layer.conv1[0].momentum = None if i == 0 else 0.3 * (i + 1)  # a cumulative average, and two momenta
    reference = copy.deepcopy(shared)
    reference.share_batch_stats = False
    inputs = [torch.randn(4, 8, 6, 6, dtype=torch.float64) for _ in range(3)]
    _steps(shared, inputs), _steps(reference, inputs)
    for (name, a), b in zip(reference.named_buffers(), shared.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)


def test_a_whole_network_with_shared_statistics_equals_the_reference(consumer_path):
    torch.manual_seed(0)
    shared = timm.create_model("microdensenet_cifar_tiny", zero_init_residual=False).double()
    reference = timm.create_model("microdensenet_cifar_tiny", zero_init_residual=False, share_batch_stats=False)
    reference = reference.double()
    reference.load_state_dict(shared.state_dict())
    assert shared.state_dict().keys() == reference.state_dict().keys()  # releases and saved runs load as before
    inputs = [torch.randn(2, 3, 32, 32, dtype=torch.float64) for _ in range(2)]
    (y_s, gx_s, gp_s), (y_r, gx_r, gp_r) = _steps(shared, inputs), _steps(reference, inputs)
    for a, b in zip(y_s + gx_s, y_r + gx_r):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    for name in gp_r:
        torch.testing.assert_close(gp_s[name], gp_r[name], rtol=1e-9, atol=1e-11, msg=name)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_kernel_gradients_pass_gradcheck(channels_last):
    assert fused.fused_kernels() is not None
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    features = [torch.randn(2, w, 3, 4, dtype=torch.float64, generator=g).contiguous(memory_format=fmt)
                .requires_grad_() for w in (3, 2, 5)]
    scale = torch.randn(10, dtype=torch.float64, generator=g, requires_grad=True)
    shift = torch.randn(10, dtype=torch.float64, generator=g, requires_grad=True)
    assert fused.takes(features, scale)
    y = fused.scale_shift_relu(features, scale, shift)
    expected = torch.relu(torch.cat(features, 1) * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-15)
    assert y.is_contiguous(memory_format=fmt)
    assert torch.autograd.gradcheck(lambda s, t, *f: fused.scale_shift_relu(list(f), s, t), (scale, shift, *features))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_kernel_passes_gradient_only_where_the_relu_is_open(dtype):
    x = torch.tensor([-1.0, 0.0, 2.0, float("nan")], dtype=dtype).view(1, 4, 1, 1).requires_grad_()
    scale, shift = torch.ones(4, dtype=dtype), torch.zeros(4, dtype=dtype)
    y = fused.scale_shift_relu([x], scale, shift)
    y.backward(torch.full_like(y, 3.0))
    ref = x.detach().clone().requires_grad_()
    torch.relu(ref).backward(torch.full_like(y, 3.0))
    torch.testing.assert_close(y.detach(), torch.relu(x.detach()), equal_nan=True)  # relu(NaN) stays NaN
    torch.testing.assert_close(x.grad, ref.grad)


def test_the_kernel_leaves_what_it_does_not_take_to_the_eager_path():
    x = [torch.randn(2, 3, 4, 4)]
    assert fused.takes(x, torch.ones(3))
    assert not fused.takes([t.bfloat16() for t in x], torch.ones(3))  # bf16 (autocast) runs eager
    assert not fused.takes(x, torch.ones(3, dtype=torch.float64))  # mixed dtypes


@pytest.mark.parametrize("channels_last", [False, True])
def test_cat_channels_gives_each_input_a_dense_gradient_in_its_own_layout(channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    features = [torch.randn(2, w, 5, 5).contiguous(memory_format=fmt).requires_grad_() for w in (3, 8, 5)]
    y = cat_channels(features)
    torch.testing.assert_close(y, torch.cat(features, 1), rtol=0, atol=0)
    grad = torch.randn_like(y)
    y.backward(grad)
    for f, g in zip(features, torch.split(grad, [3, 8, 5], 1)):
        torch.testing.assert_close(f.grad, g, rtol=0, atol=0)
        assert f.grad.is_contiguous(memory_format=fmt)


def test_without_a_compiler_training_warns_once_and_takes_the_eager_path(tmp_path):
    code = ("import json, warnings, torch\n"
            "from microdense.layers import MicroDenseBlock, MicroDenseBlockCfg, fused\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    block = MicroDenseBlock(8, 8, MicroDenseBlockCfg(base_width=4, group_width=2))\n"
            "    block(torch.randn(2, 8, 4, 4)).sum().backward()\n"
            "    block(torch.randn(2, 8, 4, 4)).sum().backward()\n"
            "print(json.dumps([fused.fused_kernels() is None, [str(w.message) for w in caught]]))\n")
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    eager, caught = json.loads(out)
    messages = [m for m in caught if "fused CPU kernel" in m]
    assert eager and len(messages) == 1 and "eager path" in messages[0]


def test_a_training_mode_fx_trace_takes_the_reference_path():
    torch.manual_seed(0)
    block = MicroDenseBlock(8, 8, MicroDenseBlockCfg(base_width=4, group_width=2, zero_init_residual=False)).double()
    traced = torch.fx.symbolic_trace(copy.deepcopy(block).train())
    assert "batch_norm" in str(traced.graph)  # every consumer's own BN, in the graph
    # NOTE: outputs and gradients only: FX records no update of timm's BatchNormAct2d buffers, on either path
    x = [torch.randn(4, 8, 6, 6, dtype=torch.float64)]
    (y_t,), (gx_t,), gp_t = _steps(traced, x)
    (y_b,), (gx_b,), gp_b = _steps(block, x)
    torch.testing.assert_close(y_t, y_b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx_t, gx_b, rtol=1e-10, atol=1e-12)
    for name in gp_b:
        torch.testing.assert_close(gp_t[name], gp_b[name], rtol=1e-10, atol=1e-12, msg=name)
