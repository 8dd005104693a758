"""Domain errors; each entry point maps them to its own answer (HTTP status, spoken text)."""


class DomainError(Exception):
    """Base class: the message is safe to show to the staff member who caused it."""


class NotFound(DomainError):
    """No such case (or not visible to this user)."""


class Forbidden(DomainError):
    """The actor's role or office does not allow this step."""


class IllegalTransition(DomainError):
    """The step is not allowed from the case's current status."""


class Invalid(DomainError):
    """The input is malformed or incomplete."""
