"""Released weights, as timm loads them: a release made here from a fresh network's weights (no training needed), in a
weights folder of the test's own (`weights_dir` monkeypatched). tests/train/test_finetune.py releases a trained run."""
import hashlib
import time

import pytest
import timm
import torch
from safetensors.torch import save_file

import microdense  # noqa: F401  (registers the models)
from microdense.models import _pretrained, list_models
from microdense.models._pretrained import read_release, release_metadata
from microdense.models.config import ModelCfg
from microdense.saved.weights_source import start_source

CLASSES = [f"c{i}" for i in range(10)]
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture
def weights(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(_pretrained, "weights_dir", lambda: folder)
    return folder


def write_release(folder, name, tag="cifar10", classes=CLASSES, seed=0):
    """A release of a fresh `name` (seeded init), returned with its state dict."""
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in timm.create_model(name, num_classes=len(classes)).state_dict().items()}
    record = dict(data={"name": "made-up"}, recipe="fast", epochs=1, seed=seed, commit="abc", val_top1=0.5,
                  val_top5=0.9, command="microdense train ...")
    path = folder / f"{name}.{tag}.safetensors"
    save_file(state, str(path), metadata=release_metadata(name, tag, classes, MEAN, STD, (3, 32, 32), 1.0, record))
    return path, state


def assert_same_weights(model, state, skip=()):
    got = model.state_dict()
    assert set(got) == set(state)
    for key, value in state.items():
        if key not in skip:
            assert torch.equal(got[key], value), key


def one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("name", list_models())
def test_pretrained_without_a_release_is_one_line_saying_what_to_do(name, weights):
    with pytest.raises(ValueError) as e:
        timm.create_model(name, pretrained=True)
    text = one_line(e.value)
    assert text.startswith(f"{name} has no released weights") and "local-dir:RUN" in text and str(weights) in text


@pytest.mark.parametrize("name", ["microdensenet_cifar_tiny", "resnet20_cifar", "densenet_bc100_k12_cifar",
                                  "darts_v2_cifar"])
def test_cifar_models_are_tagged_cifar10_and_unchanged_without_pretrained(name):
    cfg = timm.create_model(name).pretrained_cfg
    shipped = _pretrained.weights_dir() / f"{name}.cifar10.safetensors"
    assert cfg["tag"] == "cifar10"
    if shipped.is_file():  # the cfg describes the release (as timm's describe their weights), loaded or not
        meta = read_release(shipped)
        assert cfg["file"] == str(shipped) and cfg["label_names"] == tuple(meta["classes"])
        assert (tuple(cfg["mean"]), tuple(cfg["std"])) == (meta["mean"], meta["std"])
    else:
        assert not cfg.get("file") and "label_names" not in cfg
    assert (cfg["num_classes"], tuple(cfg["input_size"]), cfg["crop_pct"]) == (10, (3, 32, 32), 1.0)
    assert timm.create_model(name).num_classes == 10
    assert timm.list_models(name, include_tags=True) == [f"{name}.cifar10"]


@pytest.mark.parametrize("name", ["microdensenet_cifar_tiny", "resnet20_cifar"])
def test_a_release_loads_through_timm_exactly_with_its_data_config(name, weights):
    path, state = write_release(weights, name)
    start = time.perf_counter()
    model = timm.create_model(name, pretrained=True)
    seconds = time.perf_counter() - start
    assert_same_weights(model, state)
    cfg = model.pretrained_cfg
    assert cfg["file"] == str(path) and cfg["tag"] == "cifar10" and cfg["num_classes"] == 10
    assert tuple(cfg["mean"]) == MEAN and tuple(cfg["std"]) == STD and tuple(cfg["input_size"]) == (3, 32, 32)
    assert cfg["crop_pct"] == 1.0 and list(cfg["label_names"]) == CLASSES
    assert seconds < 1.0, f"loading {name} took {seconds:.2f} s"
    assert_same_weights(timm.create_model(f"{name}.cifar10", pretrained=True), state)  # the tag by name


def test_another_class_count_gets_a_new_classifier_and_the_same_backbone(weights):
    _, state = write_release(weights, "microdensenet_cifar_tiny")
    model = timm.create_model("microdensenet_cifar_tiny", pretrained=True, num_classes=3)
    assert model.num_classes == 3 and model.get_classifier().weight.shape == (3, 192)
    got = model.state_dict()
    for key, value in state.items():
        if not key.startswith("head.fc."):
            assert torch.equal(got[key], value), key
    features = timm.create_model("microdensenet_cifar_tiny", pretrained=True, features_only=True)
    assert torch.equal(features.state_dict()["stem_0.weight"], state["stem.0.weight"])


def test_a_source_the_caller_names_is_timms_to_load(weights, tmp_path):
    """A file overlay (as local-dir: and hf-hub: give) loads that file, whether or not the package has a release."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    path, state = write_release(other, "resnet20_cifar", seed=3)
    model = timm.create_model("resnet20_cifar", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert_same_weights(model, state)


def test_the_default_tag_wins_and_any_other_tag_loads_by_name(weights):
    _, other = write_release(weights, "resnet20_cifar", tag="alt", seed=1)
    assert _pretrained.released("resnet20_cifar") == ("alt", weights / "resnet20_cifar.alt.safetensors")
    _, default = write_release(weights, "resnet20_cifar", seed=2)
    assert _pretrained.released("resnet20_cifar")[0] == "cifar10"
    assert_same_weights(timm.create_model("resnet20_cifar", pretrained=True), default)
    from microdense.models._pretrained import pretrained_overlay
    model = timm.create_model("resnet20_cifar", pretrained=True,
                              pretrained_cfg_overlay=pretrained_overlay("resnet20_cifar", True, "alt"))
    assert_same_weights(model, other)


def test_a_truncated_or_foreign_file_is_one_line(weights):
    path, _ = write_release(weights, "microdensenet_cifar_tiny")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as e:
        timm.create_model("microdensenet_cifar_tiny", pretrained=True)
    assert "truncated or corrupt" in one_line(e.value)
    save_file({"w": torch.zeros(2)}, str(path))  # a safetensors file, but no release header
    with pytest.raises(ValueError, match="is not a microdense release: its header lacks architecture"):
        read_release(path)


def test_model_cfg_finds_the_release_without_reading_it(weights, monkeypatch):
    with pytest.raises(ValueError) as e:
        start_source(ModelCfg(pretrained=True))
    assert one_line(e.value).startswith("ModelCfg.pretrained: microdensenet_cifar_tiny has no released weights")
    write_release(weights, "microdensenet_cifar_tiny")

    def refuse(*args, **kwargs):
        raise AssertionError("ModelCfg read the weights file")

    # NOTE: its check builds the network on the meta device; the file is read once, into the real model.
    monkeypatch.setattr(_pretrained, "read_release", refuse)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", refuse)
    start_source(ModelCfg(pretrained=True))
    start_source(ModelCfg(init_from="microdensenet_cifar_tiny.cifar10"))


def test_what_a_run_cannot_start_from_is_refused_when_it_starts_not_when_read(weights, tmp_path):
    # NOTE: a saved configuration whose source has moved since stays readable; the run that would use it refuses
    moved, unreleased = ModelCfg(init_from="/no/such/run"), ModelCfg(init_from="resnet20_cifar.cifar10")
    with pytest.raises(FileNotFoundError, match="ModelCfg.init_from: '/no/such/run' does not exist"):
        start_source(moved)
    with pytest.raises(ValueError, match="ModelCfg.init_from: resnet20_cifar.cifar10 has no released weights"):
        start_source(unreleased)
    with pytest.raises(ValueError, match="ModelCfg.init_from: pretrained is set too"):
        ModelCfg(pretrained=True, init_from=str(tmp_path))  # a rule between values: refused when made


def test_shipped_releases_are_listed_by_timm(weights):
    path, _ = write_release(weights, "resnet20_cifar")
    damaged, _ = write_release(weights, "resnet56_cifar")
    damaged.write_bytes(damaged.read_bytes()[:-100])
    cfgs = {f"{m}_cifar.cifar10": {"num_classes": 10, "mean": (0.1, 0.1, 0.1)} for m in ("resnet20", "resnet32",
                                                                                          "resnet56")}
    default = _pretrained.generate_release_cfgs(cfgs)
    cfg = default["resnet20_cifar"].cfgs["cifar10"]
    assert default["resnet20_cifar"].is_pretrained and cfg.file == str(path)
    assert (cfg.mean, cfg.std, cfg.label_names, cfg.crop_pct) == (MEAN, STD, tuple(CLASSES), 1.0)
    assert not default["resnet32_cifar"].is_pretrained and default["resnet32_cifar"].cfgs["cifar10"].file is None
    # a damaged release is still marked (pretrained=True then says what is wrong), and does not break registration
    cfg = default["resnet56_cifar"].cfgs["cifar10"]
    assert cfg.file == str(damaged) and cfg.mean == (0.1, 0.1, 0.1) and cfg.label_names is None


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_every_release_in_the_package_is_listed_by_timm_and_described_by_its_card():
    shipped = sorted(_pretrained.weights_dir().glob("*.safetensors"))
    if not shipped:
        pytest.skip("the package ships no release yet")
    assert {p.name.removesuffix(".safetensors") for p in shipped} <= set(timm.list_pretrained())
    for path in shipped:
        meta = read_release(path)
        if meta["tag"] == "cifar10":  # torchvision's CIFAR-10 class order, 32 px, no crop
            assert (meta["classes"], meta["input_size"], meta["crop_pct"]) == (CIFAR10_CLASSES, (3, 32, 32), 1.0)
        card = path.with_name(path.name.removesuffix(".safetensors") + ".md").read_text()
        assert hashlib.sha256(path.read_bytes()).hexdigest() in card and meta["record"]["command"] in card
        assert f"{100 * meta['record']['val_top1']:.2f}%" in card and meta["record"]["commit"] in card
