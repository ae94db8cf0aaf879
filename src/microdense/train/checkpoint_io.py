"""Lightning's checkpoint IO, made safe: atomic writes, and loads that never unpickle code."""
import os
from typing import Any, Dict, Optional, Union

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from microdense.io import atomic_open

PathLike = Union[str, os.PathLike]


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, made safe: writes go through a temporary file and a rename, and
    loads never unpickle code (`weights_only=True`)."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: PathLike,
                        storage_options: Optional[Any] = None) -> None:
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path: PathLike, map_location: Optional[Any] = None, **kwargs: Any) -> Dict[str, Any]:
        kwargs["weights_only"] = True
        return super().load_checkpoint(path, map_location=map_location, **kwargs)
