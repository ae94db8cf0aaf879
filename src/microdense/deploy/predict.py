"""Top-k labels for image files, from a release or any model file this project writes: a run folder,
model.safetensors, a Lightning .ckpt, or an exported .onnx / TorchScript .pt (which carry their class names and input
transform).

Each image is resized and centre-cropped as timm's `create_transform` does for the model's data config.
"""
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS

from microdense.deploy.export import METADATA_KEY, onnx_fixed_batch, onnx_session, run_onnx
from microdense.errors import ConfigError, DataError, WeightsError
from microdense.saved.weights_source import load_model

log = logging.getLogger(__name__)


@dataclass
class Predictor:
    forward: Callable[[torch.Tensor], torch.Tensor]  # normalised NCHW batch -> logits
    classes: List[str]
    data_config: Dict[str, Any]  # timm's: input_size, interpolation, mean, std, crop_pct, crop_mode


@dataclass
class Prediction:
    path: str
    top: List[Tuple[str, int, float]]  # (label, class index, probability), most probable first


def _from_metadata(meta: Dict[str, Any], forward: Callable[[torch.Tensor], torch.Tensor]) -> Predictor:
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return Predictor(forward, list(meta["label_names"]), {k: meta[k] for k in keys})


def _open_onnx(path: Path) -> Predictor:
    try:
        session = onnx_session(path)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable files
        raise WeightsError(f"{path} is not a readable ONNX model ({str(e).splitlines()[0][:200]})") from None
    meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if meta is None:
        raise WeightsError(f"{path} has no microdense metadata (class names, input transform); export it with "
                         "microdense export")
    fixed = onnx_fixed_batch(session)
    return _from_metadata(json.loads(meta), lambda x: torch.from_numpy(run_onnx(session, x.numpy(), fixed)))


def _open_torchscript(path: Path) -> Predictor:
    extra = {METADATA_KEY + ".json": ""}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as e:
        raise WeightsError(f"{path} is not a readable TorchScript file ({str(e).splitlines()[0][:200]})") from None
    if not extra[METADATA_KEY + ".json"]:
        raise WeightsError(f"{path} has no microdense metadata; export it with microdense export")
    return _from_metadata(json.loads(extra[METADATA_KEY + ".json"]), module)


def open_predictor(path: os.PathLike) -> Predictor:
    """A predictor from an exported .onnx or TorchScript .pt, or any source of weights (`WeightsSource`: a release, a
    run folder, model.safetensors, a .ckpt)."""
    path = Path(path)
    if path.suffix == ".onnx" and path.is_file():
        return _open_onnx(path)
    if path.suffix == ".pt" and path.is_file():
        return _open_torchscript(path)
    loaded = load_model(path)
    model = loaded.model.eval()
    return Predictor(model, loaded.info.classes or [str(i) for i in range(model.num_classes)],
                     loaded.info.data_config())


def collect_images(paths: Sequence[os.PathLike]) -> List[Path]:
    """Files named, and every image file under folders named (recursively, sorted).

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    files: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(IMG_EXTENSIONS))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return files


def _decode(path: Path, transform: Any) -> torch.Tensor:
    with Image.open(path) as img:
        return transform(img.convert("RGB"))


def predict(predictor: Predictor, files: Sequence[Path], topk: int = 5, batch_size: int = 32,
            on_skip: Callable[[Path, str], None] = lambda path, why: None) -> Iterator[Prediction]:
    """Predictions for `files`, in order. An unreadable file is reported to `on_skip` and skipped, except when it is
    the only file, which is an error.

    Raises:
        ConfigError: `topk` outside 1..classes. DataError: a single file that is not a readable image.
    """
    from timm.data import create_transform

    if not 1 <= topk <= len(predictor.classes):
        raise ConfigError(f"topk {topk} must lie in 1..{len(predictor.classes)}, the model's number of classes")
    transform = create_transform(**predictor.data_config, is_training=False)
    for start in range(0, len(files), batch_size):
        kept, images = [], []
        for path in files[start:start + batch_size]:
            try:
                images.append(_decode(path, transform))
                kept.append(path)
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
                if len(files) == 1:
                    raise DataError(f"{path} is not an image that can be read ({type(e).__name__})") from None
                on_skip(path, type(e).__name__)
        if not images:
            continue
        with torch.no_grad():
            probs = predictor.forward(torch.stack(images)).float().softmax(1)
        values, indices = probs.topk(topk, dim=1)
        for path, vs, ix in zip(kept, values.tolist(), indices.tolist()):
            yield Prediction(str(path), [(predictor.classes[i], i, v) for v, i in zip(vs, ix)])
