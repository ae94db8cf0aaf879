"""A trained model as a folder in the layout the model hubs use, written and read by timm itself.

    FOLDER/model.safetensors   the weights (float32)
    FOLDER/config.json         architecture, model_args (every argument the network was built with: a width-scaled
                               run too), pretrained_cfg (mean, std, input size, crop, label names) and the run's record
    FOLDER/README.md           the model card: the hub's metadata block (library, tags, datasets, metrics), then the
                               card a packaged release carries

timm writes the weights and config.json (`save_for_hf`, through `microdense.saved.trained_model.save_for_timm`) and
the card's metadata block (`generate_readme`), and reads the folder back after `import microdense`:
`timm.create_model("local-dir:FOLDER", pretrained=True)`, or `"hf-hub:USER/NAME"` once uploaded with
`huggingface_hub.upload_folder(repo_id="USER/NAME", folder_path="FOLDER")` (README "Released weights"). The
`microdense` commands take the folder as a run folder (`--checkpoint FOLDER`).
"""
import hashlib
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from timm.models._hub import generate_readme

from microdense.deploy.release import command_of, model_card, run_record
from microdense.io import atomic_folder, atomic_write_text
from microdense.models._pretrained import read_release
from microdense.saved.run_folder import read_saved_config
from microdense.saved.trained_model import WEIGHTS, LoadedModel, save_for_timm
from microdense.saved.weights_source import WeightsSource

__all__ = ["write_hub_folder"]

# datasets the hubs know by these names (the card's `datasets:`); another dataset's card names none
HUB_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagenet-1k", "imagenet-1k": "imagenet-1k"}


def _source(source: str, command: Optional[str], data_note: Optional[str]) -> Tuple[LoadedModel, Dict[str, Any],
                                                                                     Optional[str]]:
    """(loaded model, its record, the dataset it names): from a run folder, or from a release by name."""
    found = WeightsSource.find(source)
    if found is not None and found.release:
        return found.loaded, read_release(found.path)["record"], found.release[1]
    if found is None or not found.path.is_dir():
        raise FileNotFoundError(f"{source} is neither a run folder nor a released name such as "
                                "microdensenet_cifar_tiny.cifar10")
    saved = read_saved_config(found.path)
    loaded = found.loaded
    record = run_record(found.path, loaded.info, saved, command_of(found.path, command), data_note)
    return loaded, record, record["data"].get("name")


def _readme(name: str, card: str, params: int, dataset: Optional[str]) -> str:
    """timm's hub card (its metadata block and title) around our card's body, with the metric it reports."""
    details: Dict[str, Any] = {"Model Type": "Image classification", "Parameters (M)": round(params / 1e6, 3),
                               "Paper": "When Residual Learning Meets Dense Aggregation, arXiv:2004.08796"}
    if dataset in HUB_DATASETS:
        details["Dataset"] = HUB_DATASETS[dataset]
    body = card.split("\n", 2)[2]  # our card without its own title: timm's readme gives one
    text = generate_readme(dict(tags=["image-classification", "timm", "microdense"], library_name="timm",
                                license="apache-2.0", details=details, description=body), name)
    # NOTE: timm's block has no metrics entry; the hubs read one to index the card's val top-1
    head, sep, rest = text.partition("\n---\n")
    return f"{head}\nmetrics:\n- accuracy{sep}{rest}"


def write_hub_folder(source: str, out: os.PathLike, command: Optional[str] = None,
                     data_note: Optional[str] = None) -> Path:
    """Write `source` (a finished run folder, or a release by name: `microdensenet_cifar_tiny.cifar10`) into the new
    folder `out` in the model hubs' layout; returns `out`. Nothing is left at `out` if any step fails.

    Args:
        command: the command that reproduces a run folder (default the file RUN/command); a release has its own.
        data_note: what the data is, in words, for the card.

    Raises:
        FileExistsError: `out` exists. FileNotFoundError: no such run folder or release.
        ConfigError: a run folder without its command. WeightsError: weights that cannot be loaded.
    """
    out = Path(out)
    loaded, record, dataset = _source(source, command, data_note)
    with atomic_folder(out) as tmp:
        save_for_timm(loaded.model, tmp, loaded.info)
        sha256 = hashlib.sha256((tmp / WEIGHTS).read_bytes()).hexdigest()
        params = sum(p.numel() for p in loaded.model.parameters())
        card = model_card(out.name, loaded.info, record, params, sha256, hub_folder=True)
        atomic_write_text(tmp / "README.md", _readme(out.name, card, params, dataset))
    return out
