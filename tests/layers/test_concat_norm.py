"""Shared batch statistics, the fused consumer kernel and the concatenation: each the same function as the reference
path (outputs, input and parameter gradients, running buffers after several steps; float64), in every setting."""
import copy
import itertools
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import microdense  # noqa: F401
from microdense.layers import MicroDenseBlock, MicroDenseBlockCfg
from microdense.layers import concat_norm, fused
from microdense.layers.concat_norm import cat_channels

PATHS = ["fused", "eager"]  # the consumer's scale-shift-ReLU: the compiled CPU kernel, or PyTorch's own operators


def kernel_or_skip():
    """The kernel is an optional accelerator: where it cannot be built (no compiler, no ninja), its tests skip."""
    if fused.fused_kernels() is None:
        pytest.skip("the fused CPU kernel cannot be built here (no C++ compiler or ninja; see the warning)")


@pytest.fixture(params=PATHS)
def consumer_path(request, monkeypatch):
    if request.param == "fused":
        kernel_or_skip()
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
    kernel_or_skip()
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


EPS32 = torch.finfo(torch.float32).eps


@pytest.mark.parametrize("widths", [(16, 16), (48, 96, 24), (64, 32, 128, 8)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_float32_kernel_equals_the_eager_arithmetic_at_bn_like_scales(widths, channels_last):
    """Forward and input gradient bit for bit: compiled with -ffp-contract=off, the kernel rounds x * scale, then
    + shift, as PyTorch's separate multiply and add do. Scale and shift gradients are sums whose order differs, so
    they are held to the float64 sum within 16 float32 epsilons of the sum of their terms' magnitudes: a term lost or
    doubled is ~1/2048 of that, 250x more. The eager path's batch_norm rounds x * scale + shift once (a fused
    multiply-add), so its output is within one rounding of each of the two steps of the kernel's."""
    kernel_or_skip()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(sum(widths))
    features = [torch.randn(8, w, 16, 16, generator=g).contiguous(memory_format=fmt).requires_grad_() for w in widths]
    channels = sum(widths)
    scale = (0.1 + 2.9 * torch.rand(channels, generator=g)).requires_grad_()  # BN-like: [0.1, 3], shifts in [-2, 2]
    shift = (4 * torch.rand(channels, generator=g) - 2).requires_grad_()
    grad = torch.randn(8, channels, 16, 16, generator=g).contiguous(memory_format=fmt)
    y = fused.scale_shift_relu(features, scale, shift)
    y.backward(grad)

    x = torch.cat([f.detach() for f in features], 1).requires_grad_()
    product = x * scale.detach().view(1, -1, 1, 1)
    pre = product + shift.detach().view(1, -1, 1, 1)
    torch.relu(pre).backward(grad)
    assert y.is_contiguous(memory_format=fmt) and torch.equal(y, torch.relu(pre))
    assert torch.equal(torch.cat([f.grad for f in features], 1), x.grad)

    m = grad.double() * (pre > 0)
    for got, terms in ((scale.grad, m * x.double()), (shift.grad, m)):
        error = (got.double() - terms.sum((0, 2, 3))).abs()
        assert (error <= 16 * EPS32 * terms.abs().sum((0, 2, 3))).all(), error.max()

    zeros = torch.zeros(channels)
    eager = torch.relu(torch.nn.functional.batch_norm(x.detach(), zeros, torch.ones(channels), scale.detach(),
                                                      shift.detach(), False, 0.0, 0.0))
    assert ((eager - y).abs() <= EPS32 * (product.abs() + pre.abs())).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_kernel_passes_gradient_only_where_the_relu_is_open(dtype):
    kernel_or_skip()
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
    assert fused.takes(x, torch.ones(3)) == (fused.fused_kernels() is not None)  # float32 on the CPU, where built
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


def test_without_a_compiler_training_warns_once_naming_the_fix_and_takes_the_eager_path(tmp_path):
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    proc = subprocess.run([sys.executable, "-m", "microdense_cli", "train", "--data", "synthetic", "--max-steps", "2",
                           "--batch-size", "4", "--set", "data.limit_images=8", "--accelerator", "cpu", "--devices",
                           "1", "--out", str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "fused CPU kernel" in line]
    assert len(said) == 1 and "no C++ compiler" in said[0] and "install one" in said[0], proc.stderr
    assert "eager path" in said[0] and "compiling the fused" not in proc.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_the_ninja_pip_installed_is_found_off_path(tmp_path, monkeypatch):
    ninja = pytest.importorskip("ninja", reason="the fast extra's ninja is not installed")
    monkeypatch.setenv("PATH", str(tmp_path))  # an unactivated venv: neither its bin nor any system ninja
    fused._pip_ninja_on_path()
    assert shutil.which("ninja") == str(Path(ninja.BIN_DIR) / "ninja")


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """A fresh cache and a stand-in for torch's builder that writes the library file a real build leaves."""
    from torch.utils import cpp_extension
    builds = []

    def load(name, sources, build_directory, **kwargs):
        builds.append(name)
        (Path(build_directory) / f"{name}.so").touch()
        return "kernel"

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setenv("CXX", sys.executable)  # NOTE: the check before a build only asks that the compiler exists
    monkeypatch.setattr(cpp_extension, "load", load)
    fused.fused_kernels.cache_clear()
    yield builds
    fused.fused_kernels.cache_clear()  # the next caller loads the real kernel again


def test_a_build_is_said_in_one_line_and_a_cached_one_is_not(fake_build, caplog):
    said = []
    for _ in range(2):  # two processes, as it were: the second finds the library the first built
        fused.fused_kernels.cache_clear()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert fused.fused_kernels() == "kernel"
        said.append([r.getMessage() for r in caplog.records])
    assert len(said[0]) == 1 and "compiling the fused CPU kernel, once" in said[0][0]
    assert str(fused.build_directory()) in said[0][0] and said[1] == [] and len(fake_build) == 2


def test_without_ninja_the_warning_names_the_extra(fake_build, monkeypatch):
    from torch.utils import cpp_extension
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: False)
    with pytest.warns(RuntimeWarning, match=r"ninja is not installed; pip install microdense\[fast\].*eager path"):
        assert fused.fused_kernels() is None
    assert fake_build == []


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
