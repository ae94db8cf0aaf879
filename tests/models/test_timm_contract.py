"""The checks timm's tests/test_models.py holds its own models to, over every model we register."""
import copy

import pytest
import timm
import torch

import microdense  # noqa: F401  (registers the models)
from microdense.models import list_models

MODELS = list_models()
BATCH = 2


def _small_input(model, batch=BATCH):
    """A cheap input: the CIFAR size, or 64 px for ImageNet-family models (fully convolutional)."""
    c, h, w = model.pretrained_cfg["input_size"]
    side = min(h, 64)
    return torch.randn(batch, c, side, side)


def test_registry_holds_the_design_variants_and_baselines():
    assert set(MODELS) >= {
        "microdensenet_cifar_tiny", "microdensenet_cifar_small", "microdensenet_cifar_base",
        "microdensenet_cifar_large", "microdensenet_imagenet_small", "microdensenet_imagenet_base",
        "resnet20_cifar", "resnet56_cifar", "resnet110_cifar", "preact_resnet164_cifar", "wrn28_10_cifar",
        "resnext29_8x64d_cifar",
        "densenet_bc100_k12_cifar", "densenet_bc190_k40_cifar", "pyramidnet110_a48_cifar", "resnet18_cifar"}


@pytest.mark.parametrize("name", MODELS)
def test_forward_finite_and_equal_with_grad_checkpointing(name):
    # NOTE: with grad enabled, as timm's own test runs it: the recomputing paths only engage when inputs need grad.
    model = timm.create_model(name).eval()
    x = _small_input(model).requires_grad_()
    y = model(x)
    assert y.shape == (BATCH, model.pretrained_cfg["num_classes"])
    assert torch.isfinite(y).all()
    (grad_plain,) = torch.autograd.grad(y.sum(), x)
    model.set_grad_checkpointing()
    y2 = model(x)
    torch.testing.assert_close(y2, y)
    (grad_ckpt,) = torch.autograd.grad(y2.sum(), x)
    torch.testing.assert_close(grad_ckpt, grad_plain)


@pytest.mark.parametrize("name", MODELS)
def test_backward_reaches_every_parameter(name):
    # NOTE: `forward` alone, on a model created with defaults (timm's test): no parameter may sit idle.
    # Zero-initialised residual branches legitimately give their inner layers zero gradients at step 0;
    # the Micro-Dense Nets can switch that off, so for them every gradient must also be non-zero.
    ours = name.startswith("microdensenet")
    model = timm.create_model(name, num_classes=42, **(dict(zero_init_residual=False) if ours else {})).train()
    x = _small_input(model)
    y = model(x)
    y.mean().backward()
    assert y.shape == (BATCH, 42)
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has non-finite gradient"
        if ours:
            assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("name", MODELS)
def test_default_cfg_consistency(name):
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    c, h, w = cfg["input_size"]
    x = torch.randn(1, c, h, w)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features
        assert tuple(feats.shape[-2:]) == tuple(cfg["pool_size"])
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features)
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)
        model.reset_classifier(0, "")
        assert model(x).shape == (1, model.num_features, *cfg["pool_size"])
    state = timm.create_model(name).state_dict()
    assert cfg["first_conv"] + ".weight" in state
    assert cfg["classifier"] + ".weight" in state
    assert timm.create_model(name).get_classifier() is not None


@pytest.mark.parametrize("name", MODELS)
def test_num_classes_in_chans_and_drop_rate(name):
    model = timm.create_model(name, num_classes=7, in_chans=1, drop_rate=0.5).eval()
    x = _small_input(model)[:, :1]
    assert model(x).shape == (BATCH, 7)
    fc = model.get_classifier()
    assert getattr(fc, "out_features", getattr(fc, "out_channels", None)) == 7  # linear, or timm's 1x1-conv head
    model.train()
    torch.manual_seed(0)
    a = model.forward_head(model.forward_features(x).detach())
    torch.manual_seed(1)
    b = model.forward_head(model.forward_features(x).detach())
    assert not torch.allclose(a, b), "drop_rate should drop pre-logit features in training"


@pytest.mark.parametrize("name", MODELS)
def test_features_only_matches_feature_info(name):
    model = timm.create_model(name, features_only=True).eval()
    x = _small_input(model, batch=1)
    with torch.no_grad():
        outs = model(x)
    info = model.feature_info
    assert len(outs) == len(info.channels())
    for out, chs, red in zip(outs, info.channels(), info.reduction()):
        assert out.shape[1] == chs
        assert out.shape[-1] == x.shape[-1] // red


@pytest.mark.parametrize("name", MODELS)
def test_forward_intermediates_match_stages(name):
    model = timm.create_model(name).eval()
    x = _small_input(model, batch=1)
    with torch.no_grad():
        final, inters = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [t.shape[1] for t in inters] == [f["num_chs"] for f in model.feature_info]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        torch.testing.assert_close(last_two[-1], inters[-1])
        assert len(model.prune_intermediate_layers(indices=1)) == 1
        assert model.forward_intermediates(x, indices=[0], intermediates_only=True)[0].shape == inters[0].shape


@pytest.mark.parametrize("name", MODELS)
def test_torchscript_equals_eager(name):
    model = timm.create_model(name).eval()
    scripted = torch.jit.script(model)
    x = _small_input(model, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize("name", MODELS)
def test_fx_trace_equals_eager_forward_and_backward(name):
    model = timm.create_model(name).eval()
    traced = torch.fx.symbolic_trace(copy.deepcopy(model))  # its own parameters, so each side has its own grads
    x = _small_input(model, batch=1)
    y, y_traced = model(x), traced(x)
    torch.testing.assert_close(y_traced, y)
    y.sum().backward()
    y_traced.sum().backward()
    traced_params = dict(traced.named_parameters())
    for pname, p in model.named_parameters():
        if pname in traced_params:  # the traced graph holds what forward uses
            torch.testing.assert_close(traced_params[pname].grad, p.grad, msg=pname)


def test_block_fields_override_every_stage():
    model = timm.create_model("microdensenet_cifar_tiny", pyramid="constant", cardinality="none")
    assert all(s.block.pyramid == "constant" and s.block.cardinality == "none" for s in model.cfg.stages)
    with pytest.raises(TypeError, match="unknown arguments"):
        timm.create_model("microdensenet_cifar_tiny", pyramidd="constant")
