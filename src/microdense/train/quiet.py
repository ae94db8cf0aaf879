"""Lightning's advertisement and the notices it triggers for nothing, dropped by their exact text only, so `train`,
`eval` and `bench` print what the user asked for and nothing else. Scoped: the caller's own filters are as they were
when the block ends."""
import contextlib
import logging
import warnings
from typing import Iterator


class _DropMessages(logging.Filter):
    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


@contextlib.contextmanager
def third_party_noise_silenced() -> Iterator[None]:
    """Within the block: Lightning's cloud-logging tip, its LeafSpec deprecation inside torch, and its logging-interval
    advice for short runs (metrics.csv is written per epoch regardless) are dropped. The warnings filters the block
    adds (these, and any the caller adds inside it) end with it (`warnings.catch_warnings`)."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    tip = _DropMessages("💡 Tip: For seamless cloud logging")
    logger.addFilter(tip)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            warnings.filterwarnings("ignore",
                                    message=r"The number of training batches .* is smaller than the logging interval")
            yield
    finally:
        logger.removeFilter(tip)
