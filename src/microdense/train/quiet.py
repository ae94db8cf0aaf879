"""Lightning's advertisement and the deprecation it triggers inside torch, dropped by their exact text only, so
`train`, `eval` and `bench` print what the user asked for and nothing else."""
import logging
import warnings


class _DropMessages(logging.Filter):
    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def silence_third_party_noise() -> None:
    """Install the filters (idempotent): Lightning's cloud-logging tip, its LeafSpec deprecation inside torch, and its
    logging-interval advice for short runs (metrics.csv is written per epoch regardless)."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages("💡 Tip: For seamless cloud logging"))
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
