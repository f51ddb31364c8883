"""The runtime's own error type: it is copied into services without the rest of the pipeline."""


class RuntimeUserError(Exception):
    """A problem the user can fix (input, paths, installed packages); the message is one line
    naming the problem and the fix."""


class EngineError(RuntimeUserError):
    """A plan that cannot run here (wrong backend, GPU, version, or a plan that does not match
    its manifest); one line naming the reason and the fix."""


def one_line(text: object) -> str:
    """Collapse a message (e.g. from TensorRT's logger) to a single line."""
    return " ".join(str(text).split())
