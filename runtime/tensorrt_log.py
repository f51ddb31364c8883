"""The one TensorRT logger of the project, for the builder and the runtime alike: TensorRT's
messages go to Python logging, and its errors are kept so a failure can be reported in one line."""
from __future__ import annotations

import logging

from runtime.errors import one_line


def tensorrt_logger(trt, log: logging.Logger, error_level: int = logging.ERROR):
    """An ILogger of module `trt` forwarding to `log`: errors at `error_level` (the builder, which
    turns the first one into its one-line error, keeps them at debug), warnings as warnings, the
    rest at debug. `first_error` and `last_error` hold the errors seen, on one line each."""
    severity = trt.ILogger.Severity

    class ForwardingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.first_error = self.last_error = ""

        def log(self, level, message):
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.last_error = one_line(message)
                self.first_error = self.first_error or self.last_error
                python_level = error_level
            else:
                python_level = logging.WARNING if level == severity.WARNING else logging.DEBUG
            log.log(python_level, "%s: %s", trt.__name__, message)

    return ForwardingLogger()
