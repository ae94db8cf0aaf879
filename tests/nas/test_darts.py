"""DARTS cell networks from genotypes, their published size, and the micro-dense integration."""
import json

import pytest
import timm
import torch

import microdense  # noqa: F401
from microdense.nas.cells import Cell, MicroDenseCellGroup
from microdense.nas.genotypes import DARTS_V2, genotype_to_json, parse_genotype

X = torch.randn(2, 3, 32, 32)


def _params(model, aux=True):
    return sum(p.numel() for n, p in model.named_parameters() if aux or "auxiliary" not in n)


def test_darts_v2_at_published_size():
    # NOTE: DARTS's published 3.3M counts the network without its auxiliary head (its count_parameters skips
    # "auxiliary"); built with the head, as trained, the model holds 3.83M.
    model = timm.create_model("darts_v2_cifar", auxiliary=True)
    assert model.auxiliary_head is not None
    assert round(_params(model, aux=False) / 1e6, 1) == 3.3
    assert _params(model, aux=False) == 3_349_342 and _params(model) == 3_825_768
    plain = timm.create_model("darts_v2_cifar")  # as timm's inception_v3: no auxiliary head unless asked
    assert plain.auxiliary_head is None and _params(plain) == 3_349_342


def test_forward_returns_logits_only_and_aux_is_separate():
    assert timm.create_model("darts_v2_cifar").train().forward_train(X)[1] == []  # no head, no auxiliary logits
    model = timm.create_model("darts_v2_cifar", auxiliary=True).train()
    assert model(X).shape == (2, 10)
    logits, aux = model.forward_train(X)
    assert logits.shape == (2, 10) and len(aux) == 1 and aux[0].shape == (2, 10)
    model.eval()
    assert model.forward_train(X)[1] == []  # the auxiliary head is for training only


def test_drop_path_is_a_constructor_rate_ramped_by_a_hook():
    model = timm.create_model("darts_v2_cifar", drop_path_rate=0.3)
    assert model.drop_path_prob == 0.0
    model.set_progress(0.5)
    assert model.drop_path_prob == pytest.approx(0.15)
    model.set_progress(2.0)
    assert model.drop_path_prob == pytest.approx(0.3)


def test_plain_host_recovered_when_integration_is_off():
    plain = timm.create_model("darts_v2_cifar").eval()
    off = timm.create_model("microdense_darts_v2_cifar", micro_depth=0).eval()
    assert [(k, v.shape) for k, v in off.state_dict().items()] == [(k, v.shape) for k, v in plain.state_dict().items()]
    off.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(off(X), plain(X))
    on = timm.create_model("microdense_darts_v2_cifar")
    assert sum(isinstance(u, MicroDenseCellGroup) for u in on.cells) == 6  # 6 + 6 + 6 normal cells in groups of 3
    assert sum(isinstance(u, Cell) for u in on.cells) == 2  # the reductions stay plain cells


def test_each_cell_in_a_group_sees_group_input_and_fused_earlier_outputs():
    torch.manual_seed(0)
    cells = [Cell(DARTS_V2.normal, DARTS_V2.normal_concat, 16, 16, 4, False, False) for _ in range(3)]
    group = MicroDenseCellGroup(cells, 16).eval()
    seen = []
    for cell in cells:
        cell.register_forward_hook(lambda m, args, out: seen.append((args[0], args[1], out)))
    g = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        y = group(torch.zeros(1), g)  # a unit's signature: (s0, s1); a group reads s1 alone
        outs = [o for _, _, o in seen]
        for i, (s0, s1, _) in enumerate(seen):
            assert s0 is g  # s0: the group input itself
            expected = group.fuse_in[i](torch.cat([g] + outs[:i], dim=1))  # s1: conv-BN of input + earlier outputs
            torch.testing.assert_close(s1, expected)
        assert [f[0].in_channels for f in group.fuse_in] == [16, 32, 48]
        torch.testing.assert_close(y, g + group.fuse_out(torch.cat(outs, dim=1)))


@pytest.mark.parametrize("name", ["darts_v1_cifar", "darts_v2_cifar", "microdense_darts_v2_cifar"])
def test_backward_and_features(name):
    model = timm.create_model(name, drop_path_rate=0.2, auxiliary=True).train()
    model.set_progress(1.0)
    logits, aux = model.forward_train(X)
    (logits.mean() + 0.4 * aux[0].mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    feats = timm.create_model(name, features_only=True).eval()
    with torch.no_grad():
        outs = feats(X)
    assert [o.shape[1] for o in outs] == feats.feature_info.channels()
    assert [32 // o.shape[-1] for o in outs] == feats.feature_info.reduction()


@pytest.mark.parametrize("name", ["darts_v2_cifar", "microdense_darts_v2_cifar"])
def test_grad_checkpointing_recomputes_and_changes_nothing(name):
    """Outputs, gradients and BN running statistics equal with and without checkpointing, drop-path on (its masks
    are replayed in the recomputation)."""
    runs = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = timm.create_model(name, drop_path_rate=0.3, auxiliary=True).train()
        model.set_progress(1.0)
        model.set_grad_checkpointing(checkpointed)
        torch.manual_seed(1)
        logits, aux = model.forward_train(X)
        (logits.square().mean() + 0.4 * aux[0].square().mean()).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        runs.append((logits.detach(), grads, {k: b.clone() for k, b in model.named_buffers()}))
    (y0, g0, b0), (y1, g1, b1) = runs
    torch.testing.assert_close(y1, y0)
    for key in g0:
        torch.testing.assert_close(g1[key], g0[key], msg=key)
    for key in b0:
        torch.testing.assert_close(b1[key], b0[key], rtol=0, atol=0, msg=key)


def test_pruning_drops_the_cells_after_the_last_tap():
    model = timm.create_model("darts_v2_cifar", auxiliary=True).eval()
    with torch.no_grad():
        first = model.forward_intermediates(X, indices=[0], intermediates_only=True)[0]
    assert model.prune_intermediate_layers(indices=[0]) == [0]
    assert len(model.cells) == 6 and model.auxiliary_head is None  # cells 0-5 feed the first tap (before cell 6)
    assert isinstance(model.get_classifier(), torch.nn.Identity)  # the head is pruned too
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(X), first)


def test_any_genotype_string_json_or_repr(tmp_path):
    text = genotype_to_json(DARTS_V2)
    assert parse_genotype(text) == parse_genotype("DARTS_V2")
    path = tmp_path / "g.json"
    path.write_text(text)
    assert parse_genotype(str(path)) == DARTS_V2
    assert parse_genotype(repr(DARTS_V2)) == DARTS_V2  # DARTS's own Genotype(...) form
    model = timm.create_model("darts_cifar", genotype=str(path), layers=5, init_channels=8, auxiliary=False)
    assert model(X).shape == (2, 10)


@pytest.mark.parametrize("mutate, message", [
    (lambda g: g.update(normal=g["normal"][:7]), "normal cell has 7 entries; a DARTS cell needs 8"),
    (lambda g: g["normal"].__setitem__(3, ["conv_9x9", 1]), "normal entry 3 ('conv_9x9', 1): unknown operation"),
    (lambda g: g["reduce"].__setitem__(2, ["skip_connect", 2]) or g["reduce"].__setitem__(1, ["max_pool_3x3", 2]),
     "reduce entry 1 ('max_pool_3x3', 2): input 2 out of range; node 2 may read states 0..1"),
    (lambda g: g.update(normal_concat=[2, 9]), "normal_concat [2, 9]"),
])
def test_malformed_genotypes_point_at_the_bad_entry(mutate, message):
    data = json.loads(genotype_to_json(DARTS_V2))
    mutate(data)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        parse_genotype(json.dumps(data))


@pytest.mark.parametrize("template", [
    "Genotype(normal=[open({path!r}, 'w').write('ran')], normal_concat=[2], reduce=[], reduce_concat=[2])",
    "Genotype(normal=__import__('pathlib').Path({path!r}).touch(), reduce=[])",
    "{{'normal': __import__('pathlib').Path({path!r}).touch(), 'reduce': []}}",
])
def test_genotype_strings_are_never_evaluated(tmp_path, template):
    marker = tmp_path / "ran"  # evaluating any of these strings would create it
    with pytest.raises(ValueError):
        parse_genotype(template.format(path=str(marker)))
    assert not marker.exists()


# The sizes the README's NAS table quotes: (parameters without the auxiliary head, with it, MACs at 32x32).
NAS_SIZES = {
    "darts_v1_cifar": (3_169_414, 3_645_840, 500_987_520),
    "darts_v2_cifar": (3_349_342, 3_825_768, 528_359_040),
    "microdense_darts_v1_cifar": (10_941_526, 11_417_952, 1_516_222_080),
    "microdense_darts_v2_cifar": (11_121_454, 11_597_880, 1_543_593_600),
}


@pytest.mark.parametrize("name", NAS_SIZES)
def test_nas_table_sizes(name):
    from microdense.models.size import measure_size
    model = timm.create_model(name, auxiliary=True)
    macs = measure_size(name, timm.create_model(name), (3, 32, 32)).macs
    assert (_params(model, aux=False), _params(model), macs) == NAS_SIZES[name]
