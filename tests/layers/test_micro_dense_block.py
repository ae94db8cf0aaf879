"""The block exactly as docs/design.md §1: channel arithmetic, refusals, every ablation, zero-init."""
import itertools

import pytest
import torch

from microdense.layers import MicroDenseBlock, MicroDenseBlockCfg, block_channels

ABLATIONS = list(itertools.product(
    ("linear", "constant"), ("adaptive", "fixed", "none"), ("micro_dense", "residual", "dense"), (True, False)))


def test_linear_widths_and_concat_width_follow_design():
    ch = block_channels(MicroDenseBlockCfg(micro_depth=3, base_width=16, group_width=8))
    assert ch.widths == (16, 32, 48)
    # c_i = w_1 (1 + i(i-1)/2): 16, 32, 64; the fused concatenation is 7 w_1 wide.
    assert ch.in_widths == (16, 32, 64)
    assert ch.fuse_width == 7 * 16
    assert ch.groups == (2, 4, 6)  # cardinality grows linearly with the layer


@pytest.mark.parametrize("depth", [1, 2, 4, 5])
def test_concat_width_closed_form(depth):
    w1 = 8
    ch = block_channels(MicroDenseBlockCfg(micro_depth=depth, base_width=w1, group_width=4))
    assert ch.in_widths == tuple(w1 * (1 + i * (i - 1) // 2) for i in range(1, depth + 1))
    assert ch.fuse_width == w1 * (1 + depth * (depth + 1) // 2)


def test_constant_fixed_residual_arithmetic():
    ch = block_channels(MicroDenseBlockCfg(base_width=16, group_width=4, pyramid="constant", cardinality="fixed"))
    assert ch.widths == (16, 16, 16) and ch.groups == (4, 4, 4)
    ch = block_channels(MicroDenseBlockCfg(base_width=16, group_width=8, cardinality="fixed"))
    assert ch.groups == (2, 2, 2)
    ch = block_channels(MicroDenseBlockCfg(base_width=16, aggregation="residual", cardinality="none"))
    assert ch.in_widths == (16, 16, 32) and ch.fuse_width == 48 and ch.groups == (1, 1, 1)


@pytest.mark.parametrize("kwargs, field, numbers", [
    (dict(base_width=20, group_width=8), "base_width", ("20", "8")),
    (dict(micro_depth=0), "micro_depth", ("0",)),
    (dict(group_width=0), "group_width", ("0",)),
    (dict(base_width=0), "base_width", ("0",)),
    (dict(pyramid="cubic"), "pyramid", ("'cubic'", "'linear'")),
    (dict(cardinality="many"), "cardinality", ("'many'", "'adaptive'")),
    (dict(aggregation="sum"), "aggregation", ("'sum'", "'micro_dense'")),
])
def test_refusals_name_field_and_numbers(kwargs, field, numbers):
    with pytest.raises(ValueError) as e:
        MicroDenseBlock(32, 32, MicroDenseBlockCfg(**kwargs))
    msg = str(e.value)
    assert f"MicroDenseBlockCfg.{field}" in msg and "\n" not in msg
    for n in numbers:
        assert n in msg


def test_no_divisibility_rule_without_groups():
    block = MicroDenseBlock(32, 32, MicroDenseBlockCfg(base_width=20, group_width=8, cardinality="none"))
    assert [layer.conv2[1].groups for layer in block.layers] == [1, 1, 1]
    assert [layer.conv2[1].out_channels for layer in block.layers] == [20, 40, 60]


@pytest.mark.parametrize("pyramid, cardinality, aggregation, preact", ABLATIONS)
@pytest.mark.parametrize("in_chs, out_chs, stride", [(16, 16, 1), (16, 32, 2)])
def test_every_ablation_shapes_and_backward(pyramid, cardinality, aggregation, preact, in_chs, out_chs, stride):
    cfg = MicroDenseBlockCfg(base_width=8, group_width=4, pyramid=pyramid, cardinality=cardinality,
                             aggregation=aggregation, preact=preact)
    block = MicroDenseBlock(in_chs, out_chs, cfg, stride=stride)
    chans = block_channels(cfg)
    # the wiring each switch promises
    assert [layer.conv1[1 if preact else 0].in_channels for layer in block.layers] == list(chans.in_widths)
    assert [layer.conv2[1 if preact else 0].groups for layer in block.layers] == list(chans.groups)
    assert block.has_shortcut == (aggregation != "dense") and block.concat == (aggregation != "residual")
    x = torch.randn(2, in_chs, 8, 8, requires_grad=True)
    y = block(x)
    assert y.shape == (2, out_chs, 8 // stride, 8 // stride)
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"


def test_grouped_convs_have_design_groups():
    block = MicroDenseBlock(32, 32, MicroDenseBlockCfg(base_width=16, group_width=8))
    assert [layer.conv2[1].groups for layer in block.layers] == [2, 4, 6]
    assert [layer.conv1[1].in_channels for layer in block.layers] == [16, 32, 64]
    assert block.fuse[1].in_channels == 112


@pytest.mark.parametrize("preact", [True, False])
@pytest.mark.parametrize("aggregation", ["micro_dense", "residual"])
def test_zero_init_residual_makes_block_its_shortcut(preact, aggregation):
    cfg = MicroDenseBlockCfg(base_width=8, group_width=4, preact=preact, aggregation=aggregation)
    block = MicroDenseBlock(16, 16, cfg).train()
    x = torch.randn(4, 16, 8, 8)
    assert torch.count_nonzero(block.residual(x)) == 0
    expected = x if preact else torch.relu(x)
    torch.testing.assert_close(block(x), expected, rtol=0, atol=0)
    # a projection block starts as its projection
    proj = MicroDenseBlock(16, 32, cfg, stride=2)
    out = proj(x)
    torch.testing.assert_close(out, proj.post_act(proj.shortcut(x)), rtol=0, atol=0)


def test_without_zero_init_the_branch_is_live():
    block = MicroDenseBlock(16, 16, MicroDenseBlockCfg(base_width=8, group_width=4, zero_init_residual=False))
    x = torch.randn(2, 16, 8, 8)
    assert not torch.allclose(block(x), x)


def test_dense_aggregation_has_no_shortcut_and_is_not_zeroed():
    block = MicroDenseBlock(16, 16, MicroDenseBlockCfg(base_width=8, group_width=4, aggregation="dense"))
    assert not block.has_shortcut
    assert block.fuse[1].weight.abs().sum() > 0


@pytest.mark.parametrize("aggregation", ["micro_dense", "residual"])
def test_each_layer_reads_all_earlier_features(aggregation):
    """Each layer is handed the very tensors it should read: in a micro-dense block the entry features and every
    earlier layer's output, in a residual one the previous output alone. And perturbing one feature changes exactly
    what comes after it: every later layer and the block output, no earlier layer."""
    torch.manual_seed(0)
    block = MicroDenseBlock(8, 8, MicroDenseBlockCfg(base_width=4, group_width=2, aggregation=aggregation,
                                                     zero_init_residual=False)).eval()
    features, inputs = [], []
    producers = [block.entry, *block.layers]
    for m in producers:
        m.register_forward_hook(lambda m, args, out: features.append(out))
    for layer in block.layers:
        layer.register_forward_pre_hook(lambda m, args: inputs.append(list(args[0])))
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        base = block(x)
    for i, got in enumerate(inputs):  # layer i + 1's input, by identity
        expected = features[:i + 1] if aggregation == "micro_dense" else features[i:i + 1]
        assert len(got) == len(expected) and all(a is b for a, b in zip(got, expected)), (aggregation, i)
    clean = [f.clone() for f in features]
    for j, producer in enumerate(producers):
        features.clear()
        handle = producer.register_forward_hook(lambda m, args, out: out + 1.0, prepend=True)
        with torch.no_grad():
            out = block(x)
        handle.remove()
        changed = [not torch.allclose(a, b) for a, b in zip(features, clean)]
        assert changed == [k >= j for k in range(len(producers))], (aggregation, j, changed)
        assert not torch.allclose(out, base)


def test_drop_path_drops_whole_branches_at_the_configured_rate_in_training_only():
    torch.manual_seed(0)
    block = MicroDenseBlock(8, 8, MicroDenseBlockCfg(base_width=4, group_width=2, zero_init_residual=False),
                            drop_path=0.3)
    x = torch.randn(4000, 8, 2, 2)
    with torch.no_grad():
        branch = block.residual(x)
        kept = (block(x) - x).flatten(1)  # identity shortcut: what is left is the (scaled) branch, or nothing
    dropped = kept.abs().amax(1) == 0
    assert abs(dropped.float().mean().item() - 0.3) < 0.03
    torch.testing.assert_close(kept[~dropped], branch.flatten(1)[~dropped] / 0.7)  # survivors scaled by 1 / keep
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + block.residual(x))  # nothing dropped at evaluation


def _outputs_and_grads(block, x):
    x = x.clone().requires_grad_(True)
    y = block(x)
    y.backward(torch.randn_like(y, generator=torch.Generator().manual_seed(1)))
    return y.detach(), x.grad, {n: p.grad.clone() for n, p in block.named_parameters()}


@pytest.mark.parametrize("aggregation", ["micro_dense", "residual", "dense"])
def test_memory_efficient_equals_plain_outputs_and_gradients(aggregation):
    torch.manual_seed(0)
    cfg = MicroDenseBlockCfg(base_width=8, group_width=4, aggregation=aggregation, zero_init_residual=False)
    plain = MicroDenseBlock(16, 24, cfg, stride=2).train()
    efficient = MicroDenseBlock(16, 24, cfg, stride=2, memory_efficient=True).train()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(4, 16, 8, 8)
    y0, gx0, gp0 = _outputs_and_grads(plain, x)
    y1, gx1, gp1 = _outputs_and_grads(efficient, x)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(gx1, gx0)
    for name in gp0:
        torch.testing.assert_close(gp1[name], gp0[name], msg=name)
    # BN running statistics are updated once per forward, not again by the recomputation
    for (name, b0), b1 in zip(plain.named_buffers(), efficient.buffers()):
        torch.testing.assert_close(b1, b0, msg=name)
