"""The mistakes a user can fix, as the package's own exception types.

Library code raises these with one line that names the problem and the fix, in the words of configuration fields, a
flag in brackets at most beside its field (so the same message serves Python callers); the command line prints
exactly that line and exits non-zero, with no traceback. Any other exception, a `ValueError` or `TypeError` from our
own code included, is a bug and keeps its traceback (as click's `UsageError` and Lightning's
`MisconfigurationException` separate the two).

Each type but `TrainingDiverged` (a run that went NaN, not a bad value) also derives from the builtin a caller would
catch for it (`ValueError`, `TypeError`), so code written against those keeps working.
"""

__all__ = ["ArgumentError", "ConfigError", "DataError", "MicrodenseError", "TrainingDiverged", "WeightsError"]


class MicrodenseError(Exception):
    """A mistake the user can fix; `exit_code` is the command line's status for it."""

    exit_code = 2


class ConfigError(MicrodenseError, ValueError):
    """A value that cannot be used: a configuration field, a model or study name, a width, a command-line option."""


class ArgumentError(MicrodenseError, TypeError):
    """An argument a function or model does not take (timm's convention for unknown model kwargs is a TypeError)."""


class DataError(MicrodenseError, ValueError):
    """Data that cannot be used as asked: an empty folder, a single class, an image that is not one."""


class WeightsError(MicrodenseError, ValueError):
    """Weights or a checkpoint that cannot be loaded: truncated, unsafe, of another model, or holding NaN or inf."""

    @classmethod
    def corrupt(cls, what: str, reason: "str | BaseException", fix: str) -> "WeightsError":
        """The one wording of a file that cannot be read as what it should be: `what` ("checkpoint X is"), why (an
        exception's first line), and the fix."""
        if isinstance(reason, BaseException):
            reason = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
        return cls(f"{what} truncated or corrupt ({reason}); {fix}")


class TrainingDiverged(MicrodenseError):
    """Training stopped at the first non-finite loss (or gradient norm, where clipping computes it), or at weights
    that turned non-finite; no non-finite weights were written anywhere a later command would load them."""

    exit_code = 3
    HINT = "lower optim.lr (--lr), or clip gradients (optim.grad_clip), and start again"

    def __init__(self, message: str, step: int, loss: float, lr: float):
        super().__init__(message)
        self.step, self.loss, self.lr = step, loss, lr

    @classmethod
    def at(cls, step: int, what: str, lr: float, loss: float = float("nan")) -> "TrainingDiverged":
        """'training diverged WHAT at learning rate LR; HINT', e.g. WHAT = 'at step 12: loss nan'."""
        return cls(f"training diverged {what} at learning rate {lr:g}; {cls.HINT}", step, loss, lr)
