"""How a failure is handled depends on what it is, decided here once for every actor."""

from brokers.envelope import InvalidMessage


class RuleViolation(Exception):
    """A command or event breaks a business rule: retrying cannot help, so it is dead-lettered."""


class NotFound(LookupError):
    """A query asked for something that does not exist."""


class ConcurrentUpdate(Exception):
    """A guarded write found the data changed since it was read: transient, so retried later."""


# Anything else a handler raises (database or broker trouble, timeouts, bugs) is treated as
# transient: retried with growing delays, then dead-lettered with the exception text.
PERMANENT: tuple[type[Exception], ...] = (InvalidMessage, RuleViolation)
