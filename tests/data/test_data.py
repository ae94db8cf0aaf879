"""Data sources, the batched augmentation, the resumable sampler."""
import pytest
import torch
from PIL import Image

from conftest import make_image_tree
from microdense.data.augment import BatchAugmentCfg, augment_batch, cutout, normalize
from microdense.data.loader import ShardedSampler
from microdense.data.sources import load_imagefolder, load_source, stratified_split
from microdense.data.synthetic import make_synthetic


def test_synthetic_is_deterministic_balanced_and_rgb():
    a, la = make_synthetic(200, seed=3)
    b, lb = make_synthetic(200, seed=3)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert a.shape == (200, 3, 32, 32) and a.dtype == torch.uint8
    assert torch.bincount(la).tolist() == [20] * 10
    assert not torch.equal(make_synthetic(200, seed=4)[0], a)


def test_stratified_split_holds_out_each_class_by_seed():
    labels = torch.arange(100) % 4
    train, val = stratified_split(labels, 0.2, seed=0)
    assert torch.bincount(labels[val]).tolist() == [5, 5, 5, 5]
    assert set(train.tolist()).isdisjoint(val.tolist()) and len(train) + len(val) == 100
    assert torch.equal(stratified_split(labels, 0.2, seed=0)[1], val)
    assert not torch.equal(stratified_split(labels, 0.2, seed=1)[1], val)


def test_imagefolder_small_images_decode_to_one_tensor(image_tree):
    source = load_imagefolder(str(image_tree))
    assert source.classes == ["class0", "class1", "class2", "class3"]
    assert source.train.images.shape == (48, 3, 16, 16) and source.val is None


def test_grayscale_and_rgba_become_rgb(tmp_path):
    root = make_image_tree(tmp_path / "t", classes=2, per_class=2)
    Image.new("L", (16, 16), 77).save(root / "class0" / "grey.png")
    Image.new("RGBA", (16, 16), (10, 20, 30, 128)).save(root / "class1" / "alpha.png")
    source = load_imagefolder(str(root))
    assert source.train.images.shape == (6, 3, 16, 16)
    grey = source.train.images[2]  # class0: 0.png, 1.png, grey.png
    assert grey.unique().tolist() == [77]


def test_corrupt_images_are_skipped_with_a_count(tmp_path, caplog):
    root = make_image_tree(tmp_path / "t", classes=2, per_class=3)
    (root / "class1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with caplog.at_level("WARNING"):
        source = load_imagefolder(str(root))
    assert len(source.train) == 6
    assert "skipped 1 unreadable image(s)" in caplog.text and "broken.png" in caplog.text


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "has no class sub-folders"),
    (lambda p: (p / "a").mkdir() or (p / "b").mkdir() or p, "holds no images"),
    (lambda p: (p / "a").mkdir() or p, r"has one class sub-folder \(a\)"),
])
def test_missing_or_empty_folder_is_a_user_error(tmp_path, make, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_source("imagefolder", str(make(tmp_path)), False, None, 0)


def test_cifar_missing_without_download_says_where_and_how(tmp_path):
    fix = r"download it \(data.download, --download\), or point data.root \(--data-dir\) at"
    with pytest.raises(FileNotFoundError, match=rf"cifar10 not found or corrupt at .*cifar-10-batches-py; {fix}"):
        load_source("cifar10", str(tmp_path), False, None, 0)


def test_a_tree_without_a_validation_split_says_what_it_holds_out(image_tree, caplog):
    with caplog.at_level("INFO", logger="microdense"):
        load_source("imagefolder", str(image_tree), False, None, 0)
    assert "no validation split found: holding out 10% of the training images (set data.val_split, --val-split)" in [
        r.getMessage() for r in caplog.records]


def test_an_imagefolder_without_a_root_names_the_field_and_the_flag(cli_here):
    proc = cli_here("train", "--data", "imagefolder", "--epochs", "1")
    assert proc.returncode == 2 and proc.stderr == ("microdense: error: an imagefolder dataset needs data.root "
                                                    "(--data-dir): a root/<class>/<image> tree\n")


def test_augment_batch_crops_and_flips_per_image():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    same = augment_batch(x, BatchAugmentCfg(crop_padding=0, flip=False))
    assert torch.equal(same, x)
    g = torch.Generator().manual_seed(0)
    flips = [augment_batch(x, BatchAugmentCfg(crop_padding=0, flip=True), g) for _ in range(20)]
    assert any(torch.equal(f[0], x[0].flip(2)) for f in flips) and any(torch.equal(f[0], x[0]) for f in flips)
    cropped = augment_batch(x, BatchAugmentCfg(crop_padding=2, flip=False), torch.Generator().manual_seed(1))
    assert cropped.shape == x.shape and cropped.dtype == torch.uint8
    # every crop is a window of the reflect-padded image
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="reflect")
    windows = [padded[:, :, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
    for n in range(2):
        assert any(torch.equal(cropped[n].float(), w[n]) for w in windows)


def test_cutout_zeroes_one_square_and_normalize_matches_formula():
    x = torch.ones(3, 3, 16, 16)
    out = cutout(x, 4, torch.Generator().manual_seed(0))
    zeros = (out[:, 0] == 0).sum((1, 2))
    assert all(0 < z <= 16 for z in zeros.tolist())
    img = torch.full((1, 3, 2, 2), 51, dtype=torch.uint8)
    y = normalize(img, (0.2, 0.2, 0.2), (0.5, 0.5, 0.5))
    torch.testing.assert_close(y, torch.zeros_like(y, dtype=torch.float32))


def test_sharded_sampler_partitions_and_resumes():
    shards = [list(ShardedSampler(10, r, 2, shuffle=True, seed=1, pad=True)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(10))
    s = ShardedSampler(10, shuffle=True, seed=1, pad=False)
    s.set_epoch(3)
    full = list(s)
    s.skip = 4
    assert list(s) == full[4:]
    assert list(s) == full  # the skip applies once
    s.set_epoch(4)
    assert list(s) != full


def test_limit_images_keeps_a_seeded_subset_of_each_split():
    full = load_source("synthetic", None, False, None, seed=0)
    small = load_source("synthetic", None, False, None, seed=0, limit=7)
    again = load_source("synthetic", None, False, None, seed=0, limit=7)
    assert len(small.train) == len(small.val) == 7
    assert torch.equal(small.train.images, again.train.images)
    # every kept image is one of the split's own
    flat = full.train.images.flatten(1)
    assert all(any(torch.equal(img.flatten(), row) for row in flat) for img in small.train.images)


def test_a_tree_is_decoded_once_per_process_until_a_file_changes(image_tree, monkeypatch):
    import os

    import microdense.data.sources as sources
    decodes = []
    real = sources._decode_all
    monkeypatch.setattr(sources, "_decode_all", lambda *a: decodes.append(1) or real(*a))
    first = load_imagefolder(str(image_tree)).train
    second = load_imagefolder(str(image_tree)).train
    assert len(decodes) == 1 and torch.equal(first.images, second.images)
    changed = next(image_tree.rglob("*.png"))
    Image.new("RGB", (16, 16), (1, 2, 3)).save(changed)
    os.utime(changed, ns=(10 ** 19, 10 ** 19))  # newer than every other file, whatever the clock's resolution
    third = load_imagefolder(str(image_tree)).train
    assert len(decodes) == 2 and not torch.equal(first.images, third.images)


@pytest.mark.parametrize("size", [0, 8, 20])
def test_cutout_is_the_same_square_in_pixels_on_the_large_image_path(tmp_path, size):
    from microdense.data.config import DataCfg
    from microdense.data.pipeline import ImagePipeline
    tree = make_image_tree(tmp_path / "big", classes=2, per_class=4, size=96)  # > 64 px: per-image transforms
    pipeline = ImagePipeline(DataCfg(name="imagefolder", root=str(tree), val_split=0.25, img_size=80, cutout=size,
                                     workers=0, batch_size=4))
    pipeline.load()
    assert not pipeline.small
    transform = pipeline._large_transform(train=True)
    torch.manual_seed(0)
    image = Image.new("RGB", (96, 96), (200, 40, 90))
    for _ in range(20):
        out = transform(image)
        zeroed = (out == 0).all(0)  # pixels cut out in every channel (the image itself has no black)
        rows, cols = zeroed.any(1).nonzero().flatten(), zeroed.any(0).nonzero().flatten()
        if size == 0:
            assert zeroed.sum() == 0
            continue
        assert 0 < len(rows) <= size and 0 < len(cols) <= size  # one square of `size` px, clipped at the edges
        assert zeroed.sum() == len(rows) * len(cols)


def test_an_offline_download_is_one_line_and_leaves_no_empty_folder(tmp_path, monkeypatch, cli_here):
    """No network: the download fails as torchvision's does offline, after making its folder."""
    import os
    import urllib.error

    import torchvision.datasets.cifar as cifar

    def offline(url, root, **kwargs):
        os.makedirs(root, exist_ok=True)
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    before = tmp_path / "kept"
    before.mkdir()
    for root in (tmp_path / "new" / "cifar", before / "cifar"):
        proc = cli_here("train", "--data", "cifar10", "--data-dir", str(root), "--download", "--out",
                        str(tmp_path / "run"))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"microdense: error: could not download cifar10 from {cifar.CIFAR10.url} (")
        assert f"folder cifar-10-batches-py in {root} by hand" in lines[0]
        assert lines[0].endswith("--data imagefolder --data-dir DIR)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"] and list(before.iterdir()) == []
