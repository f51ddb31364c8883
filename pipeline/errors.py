"""One exception type for problems the user can fix; CLIs print it as one line and exit non-zero."""


class UserError(Exception):
    """A problem with the user's input or environment; the message names it and the fix."""
