"""Where images come from: the synthetic set, CIFAR-10/100 on disk, or any ImageFolder tree.

Decoding shows a progress bar on a terminal where this module's logger shows INFO (the command line's default,
not --quiet).
Small images (<= 64 px) are decoded once into one uint8 tensor (`TensorImages`); large ones stay
files (`FileImages`) for per-image torchvision transforms. Every failure the user can fix is a
`DataError` (or, for a missing path, `FileNotFoundError`) naming the path and the fix.
"""
import hashlib
import logging
import os
import shutil
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm.auto import tqdm

from microdense.data.synthetic import make_synthetic
from microdense.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SMALL_IMAGE_MAX_SIDE = 64
SYNTHETIC_TRAIN, SYNTHETIC_VAL = 5000, 1000
DEFAULT_VAL_SPLIT = 0.1  # held out of a dataset that ships no validation split


@dataclass
class TensorImages:
    """A decoded split: uint8 images N x 3 x H x W and int64 labels, both in memory."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor) -> "TensorImages":
        return TensorImages(self.images[idx], self.labels[idx])


@dataclass
class FileImages:
    """An undecoded split: image paths and their labels."""

    paths: List[str]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor) -> "FileImages":
        return FileImages([self.paths[i] for i in idx.tolist()], self.labels[idx])


Split = Union[TensorImages, FileImages]


@dataclass
class DataSource:
    train: Split
    val: Optional[Split]
    classes: List[str]
    fingerprint: Optional[Dict[str, Any]] = None  # what was read, as `data_fingerprint` describes it


def data_fingerprint(name: str, source: DataSource, files: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """What a dataset was, for every result made from it: its images per class (both shipped splits, before any
    held-out split) and a SHA-256 of its sorted file list (an image tree: paths relative to its root) or, for data
    that is one tensor (CIFAR's files, the synthetic set), of its pixels and labels."""
    splits = [s for s in (source.train, source.val) if s is not None]
    labels = torch.cat([s.labels for s in splits])
    digest = hashlib.sha256()
    if files is not None:
        digest.update("\n".join(sorted(files)).encode())
    else:
        for split in splits:
            digest.update(split.images.contiguous().numpy().tobytes())
            digest.update(split.labels.numpy().tobytes())
    counts = torch.bincount(labels, minlength=len(source.classes)).tolist()
    return {"name": name, "images": len(labels), "per_class": dict(zip(source.classes, counts)),
            "sha256": digest.hexdigest(), "hashed": "file list" if files is not None else "pixels and labels"}


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held-out): `fraction` of every class, chosen by `seed`."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"val_split must lie between 0 and 1 (exclusive), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    held: List[torch.Tensor] = []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        held.append(idx[: max(1, round(fraction * len(idx)))] if len(idx) > 1 else idx[:0])
    held_idx = torch.cat(held).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held_idx] = False
    return mask.nonzero().flatten(), held_idx


def load_synthetic(seed: int) -> DataSource:
    images, labels = make_synthetic(SYNTHETIC_TRAIN + SYNTHETIC_VAL, seed=seed)
    data = TensorImages(images, labels)
    n = SYNTHETIC_TRAIN
    return DataSource(data.subset(torch.arange(n)), data.subset(torch.arange(n, len(data))),
                      [f"class_{i}" for i in range(10)])


def _download(name: str, cls: Any, root: Path) -> None:
    """Fetch a torchvision CIFAR into `root`; where the network fails, the folders the attempt made are removed (what
    was there before stays) and the error names the URL, the folder and the way around it."""
    made = next((p for p in reversed((root, *root.parents)) if not p.exists()), None)
    try:
        cls(str(root), train=True, download=True)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        reason = getattr(e, "reason", e)
        raise ConnectionError(f"could not download {name} from {cls.url} ({reason}); put its extracted folder "
                              f"{cls.base_folder} in {root} by hand, or use an image tree instead (data.name "
                              "imagefolder and data.root: --data imagefolder --data-dir DIR)") from None


def load_cifar(name: str, root: str, download: bool) -> DataSource:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    if download:
        _download(name, cls, Path(root))
    try:
        train = cls(root, train=True)
        val = cls(root, train=False)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted."
        folder = Path(root) / cls.base_folder
        raise FileNotFoundError(f"{name} not found or corrupt at {folder}; download it (data.download, --download), "
                                f"or point data.root (--data-dir) at the folder that holds {cls.base_folder}") from None

    def to_split(ds) -> TensorImages:
        return TensorImages(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets))

    return DataSource(to_split(train), to_split(val), list(train.classes))


def check_folder(root: Path) -> None:
    """Refuse a data folder that is missing, or is a file, naming which and the layout expected."""
    if root.is_file():
        raise NotADirectoryError(f"data folder {root} is a file, not a folder; point data.root (--data-dir) at a "
                                 "root/<class>/<image> tree")
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist; expected a root/<class>/<image> tree")


def class_count(name: str, root: Optional[str]) -> int:
    """A dataset's class count, known before any image is read (a study sizes its nets with it)."""
    if name == "cifar100":
        return 100
    if name == "imagefolder" and root:
        base = Path(root)
        base = base / "train" if (base / "train").is_dir() else base
        check_folder(base)
        return sum(1 for e in os.scandir(base) if e.is_dir())
    return 10


def _scan_folder(root: Path) -> Tuple[List[str], List[str], List[int]]:
    check_folder(root)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise DataError(f"data folder {root} has no class sub-folders; expected {root}/<class>/<image>")
    if len(classes) == 1:
        raise DataError(f"data folder {root} has one class sub-folder ({classes[0]}); a classifier needs at least 2: "
                        f"{root}/<class>/<image>")
    paths, labels = [], []
    for label, cls in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(root / cls, followlinks=True)):
            for f in sorted(files):
                if f.lower().endswith(IMG_EXTENSIONS):
                    paths.append(os.path.join(dirpath, f))
                    labels.append(label)
    if not paths:
        raise DataError(f"data folder {root} holds no images (looked for {', '.join(IMG_EXTENSIONS)})")
    return classes, paths, labels


def _hide_bar() -> Optional[bool]:
    """tqdm's `disable`: hidden unless this module logs INFO; then shown on a terminal only (None: tqdm decides)."""
    return True if not log.isEnabledFor(logging.INFO) else None


def _decode_rgb(path: str, size: Optional[Tuple[int, int]] = None) -> Optional[torch.Tensor]:
    """uint8 3 x H x W, converted to RGB (grey, palette and RGBA alike); None when unreadable."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.size[1], img.size[0], 3
                                                                                    ).permute(2, 0, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def _first_readable_size(paths: Sequence[str]) -> Tuple[int, int]:
    for p in paths[:100]:
        img = _decode_rgb(p)
        if img is not None:
            return tuple(img.shape[1:])
    raise DataError(f"none of the first images could be read, e.g. {paths[0]}; is this an image folder?")


def _decode_all(paths: List[str], labels: List[int], size: Tuple[int, int], desc: str) -> TensorImages:
    """Decode every image once into one tensor; unreadable images are skipped with a count."""
    images = torch.empty(len(paths), 3, *size, dtype=torch.uint8)
    ok = torch.zeros(len(paths), dtype=torch.bool)
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = pool.map(lambda p: _decode_rgb(p, size), paths, chunksize=256)
        for i, img in enumerate(tqdm(results, total=len(paths), desc=desc, unit="img", leave=False,
                                     disable=_hide_bar())):
            if img is not None:
                images[i] = img
                ok[i] = True
    bad = [p for p, good in zip(paths, ok.tolist()) if not good]
    if bad:
        log.warning("skipped %d unreadable image(s), e.g. %s", len(bad), bad[0])
    if not ok.any():
        raise DataError(f"no readable images among {len(paths)} files, e.g. {paths[0]}")
    return TensorImages(images[ok], torch.tensor(labels)[ok])


_DECODED: Dict[tuple, TensorImages] = {}  # the last decoded tree, by its files: a study's runs decode it once


def _decode_cached(paths: List[str], labels: List[int], size: Tuple[int, int], desc: str) -> TensorImages:
    """`_decode_all`, reusing this process's last decode when the same files, unchanged since, are asked for."""
    key = (tuple(paths), tuple(labels), size, max(os.stat(p).st_mtime_ns for p in paths))
    if key not in _DECODED:
        _DECODED.clear()  # one tree at a time: memory stays that of one dataset
        _DECODED[key] = _decode_all(paths, labels, size, desc)
    return _DECODED[key]


def _verify_files(paths: List[str], labels: List[int]) -> FileImages:
    """Keep the files PIL can identify (a header check, not a full decode); skip the rest with a count."""
    def readable(p: str) -> bool:
        try:
            with Image.open(p) as img:
                img.verify()
            return True
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return False

    with ThreadPoolExecutor(max_workers=8) as pool:
        good = list(tqdm(pool.map(readable, paths, chunksize=256), total=len(paths), desc="checking images",
                         unit="img", leave=False, disable=_hide_bar()))
    bad = [p for p, g in zip(paths, good) if not g]
    if bad:
        log.warning("skipped %d unreadable image(s), e.g. %s", len(bad), bad[0])
    keep = [i for i, g in enumerate(good) if g]
    return FileImages([paths[i] for i in keep], torch.tensor(labels)[keep])


def _load_tree(root: Path, classes: Optional[List[str]], small: Optional[bool], desc: str
               ) -> Tuple[Split, List[str], bool, List[str]]:
    found, paths, labels = _scan_folder(root)
    if classes is not None and found != classes:
        raise DataError(f"{root} has classes {found[:5]}... but the training split has {classes[:5]}...; "
                        "the train and val folders must hold the same class folders")
    size = _first_readable_size(paths)
    if small is None:
        small = max(size) <= SMALL_IMAGE_MAX_SIDE
    split = _decode_cached(paths, labels, size, desc) if small else _verify_files(paths, labels)
    return split, found, small, paths


def load_imagefolder(root: str) -> DataSource:
    """root/<class>/<image>, or root/train and root/val with that layout inside each (val may be absent)."""
    base = Path(root)
    if (base / "train").is_dir():
        train, classes, small, files = _load_tree(base / "train", None, None, "decoding train")
        val = None
        if (base / "val").is_dir():
            val, _, _, val_files = _load_tree(base / "val", classes, small, "decoding val")
            files = files + val_files
    else:
        (train, classes, _, files), val = _load_tree(base, None, None, "decoding images"), None
    source = DataSource(train, val, classes)
    relative = [os.path.relpath(f, base) for f in files]
    return replace(source, fingerprint=data_fingerprint("imagefolder", source, relative))


def load_dataset(kind: str, data_dir: Optional[str], download: bool, seed: int) -> DataSource:
    """A dataset whole, as it ships (its own validation split, if any), with its fingerprint. `seed` draws the
    synthetic set."""
    if kind == "synthetic":
        source = load_synthetic(seed)
    elif kind in ("cifar10", "cifar100"):
        source = load_cifar(kind, data_dir or "data", download)
    elif kind == "imagefolder":
        if not data_dir:
            raise ConfigError("an imagefolder dataset needs data.root (--data-dir): a root/<class>/<image> tree")
        source = load_imagefolder(data_dir)
    else:
        raise ConfigError(f"unknown dataset {kind!r}; choose synthetic, cifar10, cifar100 or imagefolder")
    return source if source.fingerprint is not None else replace(source, fingerprint=data_fingerprint(kind, source))


def hold_out(source: DataSource, fraction: float, seed: int) -> DataSource:
    """`source` with a stratified `fraction` of its training split (chosen by `seed`) as its validation split."""
    train_idx, val_idx = stratified_split(source.train.labels, fraction, seed)
    return replace(source, train=source.train.subset(train_idx), val=source.train.subset(val_idx))


def load_source(kind: str, data_dir: Optional[str], download: bool, val_split: Optional[float], seed: int,
                limit: Optional[int] = None) -> DataSource:
    """Load a dataset's train and validation splits.

    `val_split` F holds out a stratified fraction F of the training split (chosen by `seed`) as the
    validation split, replacing any the dataset ships. None keeps the shipped split, or holds out
    `DEFAULT_VAL_SPLIT` where there is none. `limit` keeps at most that many images of each split (a random subset
    drawn by `seed`).
    """
    source = load_dataset(kind, data_dir, download, seed)
    if val_split is None and source.val is None:
        log.info("no validation split found: holding out %d%% of the training images (set data.val_split, "
                 "--val-split)", round(100 * DEFAULT_VAL_SPLIT))
        val_split = DEFAULT_VAL_SPLIT
    if val_split:
        source = hold_out(source, val_split, seed)
    if limit:
        g = torch.Generator().manual_seed(seed)
        train, val = (s.subset(torch.randperm(len(s), generator=g)[:limit]) for s in (source.train, source.val))
        source = replace(source, train=train, val=val)
    return source
