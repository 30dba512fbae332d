"""Where the core's errors become Dagster failures: bad input fails once, transient faults retry."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from churn_platform.core.errors import PlatformError


@contextmanager
def reported_as_failure() -> Iterator[None]:
    """Turn a `PlatformError` into a `dg.Failure` with its words, retried only if it may pass.

    Any other exception is left as it is: the retry policy treats it as transient.
    """
    try:
        yield
    except PlatformError as error:
        raise dg.Failure(description=error.description, allow_retries=error.retryable) from None
