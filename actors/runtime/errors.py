"""Every way a message can fail, and what the runtime does about it: the whole table, decided here
once for every actor.

==========================  =========  ==================================================
raised                      kind       the runtime
==========================  =========  ==================================================
InvalidMessage              permanent  dead-letters at once: "invalid-message"
(envelope, body, type)
RuleViolation               permanent  dead-letters at once: "rule-violation"
CorruptData                 permanent  dead-letters at once: "corrupt-data" (a bug or a
                                       hand edit: retrying reads the same data again)
Transient (NotFound,        transient  retries after growing delays (EMPORIUM_RETRY_DELAYS_MS),
ConcurrentUpdate, an                   then dead-letters: "retries-exhausted"
actor's own)
anything else (database,    transient  the same: not known to be permanent, so given time
broker, timeouts, bugs)
==========================  =========  ==================================================

Queries answer instead: InvalidMessage 400, NotFound 404, RuleViolation 409, anything else 503.
"""

from brokers.deadletters import Reason
from brokers.envelope import InvalidMessage


class Permanent(Exception):
    """Retrying cannot help: the message is dead-lettered at once, with this reason."""

    reason = Reason.RULE_VIOLATION


class Transient(Exception):
    """May clear up by itself: the message is retried later."""


class RuleViolation(Permanent):
    """A command or event breaks a business rule."""


class CorruptData(Permanent):
    """Stored data that no sequence of decisions can produce (a bug or a hand edit): the message
    that met it waits in the dead-letter queue until an operator has mended the data."""

    reason = Reason.CORRUPT_DATA


class NotFound(Transient, LookupError):
    """Something asked for does not exist. A query answers 404; in a handler it is transient,
    because concurrent consumers may run an update before the create it follows has committed."""


class ConcurrentUpdate(Transient):
    """A guarded write found the data changed since it was read: decided again later."""


PERMANENT: tuple[type[Exception], ...] = (InvalidMessage, Permanent)


def dead_letter_reason(error: Exception) -> Reason:
    """Why a message that failed permanently is dead-lettered."""
    if isinstance(error, InvalidMessage):
        return Reason.INVALID_MESSAGE
    return error.reason if isinstance(error, Permanent) else Reason.RULE_VIOLATION
