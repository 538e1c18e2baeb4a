"""How a failure is handled depends on what it is, decided here once for every actor."""

from brokers.envelope import InvalidMessage


class RuleViolation(Exception):
    """A command or event breaks a business rule: retrying cannot help, so it is dead-lettered."""


class NotFound(LookupError):
    """Something asked for does not exist. A query answers 404; in a handler it is transient,
    because concurrent consumers may run an update before the create it follows has committed."""


class ConcurrentUpdate(Exception):
    """A guarded write found the data changed since it was read: transient, so retried later."""


# Anything else a handler raises (database or broker trouble, timeouts, bugs) is treated as
# transient: retried with growing delays, then dead-lettered with the exception text.
PERMANENT: tuple[type[Exception], ...] = (InvalidMessage, RuleViolation)
