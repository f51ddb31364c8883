"""The offline stages' user error: the runtime's one error style (runtime/errors.py), which it owns."""
from runtime.errors import RuntimeUserError


class UserError(RuntimeUserError):
    """A problem with the user's input or environment; the message names it and the fix."""
