"""Domain errors. They know nothing of HTTP; ``web.errors`` maps each to a status."""

from __future__ import annotations


class DispatchError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "dispatch_error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DispatchError):
    code = "not_found"


class InvalidTransition(DispatchError):
    """The booking is not in a status the action can start from (or was changed meanwhile)."""

    code = "invalid_transition"

    def __init__(self, message: str, *, current_status: str, version: int) -> None:
        super().__init__(message, current_status=current_status, version=version)


class NotOfferedToYou(DispatchError):
    """A driver acted on a booking that is not, or no longer, theirs."""

    code = "not_your_booking"

    def __init__(self, message: str, *, current_status: str, version: int) -> None:
        super().__init__(message, current_status=current_status, version=version)


class IdempotencyConflict(DispatchError):
    """The same Idempotency-Key came back with a different request body."""

    code = "idempotency_key_reused"


class DriverBusy(DispatchError):
    """A driver holding a booking tried to go offline or change state underneath it."""

    code = "driver_busy"
