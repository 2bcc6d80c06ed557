"""The bridge's errors, grouped by what the caller does about them.

    ConfigError             the settings are wrong; fix the config file or environment
    ExportError             a request to the upstream failed
      RetryableError        try again later (connection error, timeout, 408, 429, 5xx); may carry retry_after
      PermanentError        the same request will never succeed (4xx other than the above)
    QueueFullError          the queue is at its bound; the receiver answers "retry later" (backpressure)
    BadRequestError         the request bytes are not an OTLP trace request; INVALID_ARGUMENT (HTTP 400), final
    RejectedSpan            one span cannot become a call; it is reported in partial_success, the rest go on
"""

from __future__ import annotations

__all__ = [
    "BadRequestError",
    "ConfigError",
    "ExportError",
    "PermanentError",
    "QueueFullError",
    "RejectedSpan",
    "RetryableError",
]


class ConfigError(Exception):
    """Raised when settings cannot be loaded or are invalid; the message lists every problem."""


class ExportError(Exception):
    """Raised when a batch could not be delivered upstream."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableError(ExportError):
    """Raised when the upstream may accept the same batch later."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class PermanentError(ExportError):
    """Raised when the upstream refused the batch and would refuse it again."""


class QueueFullError(Exception):
    """Raised when the queue cannot take more calls; the exporter should retry after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadRequestError(ValueError):
    """Raised when a request cannot be decoded at all; the message says why. Sending it again cannot help."""


class RejectedSpan(Exception):
    """Raised by the mapping for a span that cannot become a call; the message is the reason."""
