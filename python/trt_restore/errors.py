"""User-facing errors: one line that says what went wrong and what to do."""


class UserError(Exception):
    """An error caused by the user's input or setup, reported without a traceback.

    The message is a single line that names the offending thing and says how
    to fix it. The command line prints it and exits with status 2.
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
