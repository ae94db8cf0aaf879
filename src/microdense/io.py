"""Atomic file writes: a temporary file beside the target, then a rename, so a crash never leaves
half a file where a good one was. The file ends with the mode a plain `open` would give (the umask's). A folder of
files is written the same way (`atomic_folder`)."""
import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc), else by setting it back."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode() -> int:
    """The mode a plain `open(path, "w")` gives a new file: 0o666 less the umask."""
    return 0o666 & ~_umask()


def publish(tmp: PathLike, path: PathLike) -> None:
    """Make the finished file `tmp` (beside `path`) appear as `path` in one rename, with a plain open's mode."""
    os.chmod(tmp, default_mode())  # mkstemp and some writers (safetensors) give 0600
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside `path`, for writers that want a file name (ONNX, TorchScript); on success it becomes
    `path` (`publish`), on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file next to `path`; on success it replaces `path` in one rename, synced first."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_folder(path: PathLike) -> Iterator[Path]:
    """A temporary folder beside `path` to fill; on success it becomes `path` in one rename (with a plain mkdir's
    mode), on failure it is removed with everything in it, so no half-written folder is ever at `path`.

    Raises:
        FileExistsError: `path` exists already (a folder is never written over).
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists already; remove it or choose another folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, path)  # NOTE: a non-empty folder that appeared meanwhile is not replaced (an empty one is)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
