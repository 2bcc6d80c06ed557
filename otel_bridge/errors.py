"""The bridge's errors, grouped by what the caller does about them.

    ConfigError               the settings are wrong; fix the config file or environment
    ExportError               a request to the upstream failed
      RetryableError          try again later (connection error, timeout, 408, 429, 5xx); may carry retry_after
      PermanentError          this request will never succeed: its calls go to the dead-letter file
        RequestTooLargeError  413: split the batch, trim a lone call
        InvalidCallsError     422: some call in the batch is refused; bisect down to it
        RetriesExhaustedError exporter.retry.max_elapsed_time passed
      ProjectBlockedError     401/403: stop delivering this project, keep its calls, try again later
    ProjectInRetry            a batch failed while another of its project waits to be retried: requeue it
    ProjectThrottled          the upstream's Retry-After reaches past the retry deadline: requeue it, wait
    ProjectRefusedError       every span of a request is for projects the upstream refuses (401/403) now:
                              PERMISSION_DENIED (HTTP 403), final
    QueueError                the queue cannot take the calls now; the receiver answers "retry later"
      QueueFullError          the queue is at its bound (exporter.queue.max_bytes): backpressure
      OversizedRequestError   one request needs more than the whole queue: it never fits, not retryable
    BadRequestError           the request bytes are not an OTLP trace request: INVALID_ARGUMENT (HTTP 400), final
    RejectedSpan              one span cannot become a call; it is reported in partial_success, the rest go on
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ExportError",
    "RetryableError",
    "PermanentError",
    "RequestTooLargeError",
    "InvalidCallsError",
    "RetriesExhaustedError",
    "ProjectBlockedError",
    "QueueError",
    "QueueFullError",
    "OversizedRequestError",
    "BadRequestError",
    "ProjectInRetry",
    "ProjectThrottled",
    "ProjectRefusedError",
    "RejectedSpan",
]


class ConfigError(Exception):
    """Raised when settings cannot be loaded or are invalid; the message lists every problem."""


class ExportError(Exception):
    """Raised when a batch could not be delivered upstream. `answer` is the upstream's response body, if any."""

    def __init__(self, message: str, *, status: int | None = None, answer: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.answer = answer


class RetryableError(ExportError):
    """Raised when the upstream may accept the same batch later."""

    def __init__(self, message: str, *, status: int | None = None, answer: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, status=status, answer=answer)
        self.retry_after = retry_after


class PermanentError(ExportError):
    """Raised when the upstream refused the batch and would refuse it again."""


class RequestTooLargeError(PermanentError):
    """Raised on 413: the body is over the upstream's limit; smaller requests may pass."""


class InvalidCallsError(PermanentError):
    """Raised on 422: the upstream refuses one or more calls of the batch."""


class RetriesExhaustedError(PermanentError):
    """Raised when a retryable failure lasted past exporter.retry.max_elapsed_time."""


class ProjectBlockedError(ExportError):
    """Raised on 401/403: the API key may not write to this project. The calls are kept, not dropped."""


class ProjectInRetry(Exception):
    """Raised when a batch fails while another batch of its project already waits to be retried: it goes
    back to the queue, so a failing project holds one consumer, not all of them. Not an ExportError, so
    layers that settle export errors (split, dead-letter) pass it on untouched."""


class ProjectThrottled(Exception):
    """Raised when the upstream asks (Retry-After) for a wait that reaches past the retry deadline: the batch
    goes back to the queue and its project waits that long. Waiting as told is not failing, so the calls
    are kept, never dead-lettered for it. Not an ExportError, so split and dead-letter pass it on."""

    def __init__(self, message: str, *, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


class ProjectRefusedError(Exception):
    """Raised when a request's spans are all for projects whose API key the upstream refuses (401/403) at
    the moment: taking them would only fill the queue with calls that cannot be delivered."""


class QueueError(Exception):
    """Raised when the queue cannot take calls now; the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFullError(QueueError):
    """Raised when the queue is at its bound (exporter.queue.max_bytes)."""


class OversizedRequestError(QueueError):
    """Raised when one request's calls exceed the whole queue bound: retrying could never succeed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=0.0)


class BadRequestError(ValueError):
    """Raised when a request cannot be decoded at all; the message says why. Sending it again cannot help."""


class RejectedSpan(Exception):
    """Raised by the mapping for a span that cannot become a call; the message is the reason."""
