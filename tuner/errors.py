"""The one exception type for user mistakes."""

from __future__ import annotations


class TunerError(Exception):
    """A mistake the user can fix: bad config, unknown task, missing data or study.

    The message says what is wrong and what to do, naming the key, file or value.
    """
