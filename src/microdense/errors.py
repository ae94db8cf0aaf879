"""The one exception the command line turns into a single line and a non-zero exit, no traceback."""


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix.

    Attributes:
        exit_code: process exit status; 2 for usage errors (argparse's convention), 1 otherwise.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
