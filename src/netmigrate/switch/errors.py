"""The one exception type of the lab switch's runtime: a gRPC status code and a message.

Every validation in the entity store raises :class:`P4RTError` with the canonical code the
P4Runtime specification names for the case; the server turns it into the RPC status (or into
one ``p4.v1.Error`` of a batch).
"""

from __future__ import annotations

import grpc


class P4RTError(Exception):
    """A request the switch refuses, with the gRPC code to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"P4RTError({self.code.name}, {self.message!r})"


def invalid(message: str) -> P4RTError:
    return P4RTError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> P4RTError:
    return P4RTError(grpc.StatusCode.NOT_FOUND, message)


def already_exists(message: str) -> P4RTError:
    return P4RTError(grpc.StatusCode.ALREADY_EXISTS, message)


def permission_denied(message: str) -> P4RTError:
    return P4RTError(grpc.StatusCode.PERMISSION_DENIED, message)


def unimplemented(message: str) -> P4RTError:
    return P4RTError(grpc.StatusCode.UNIMPLEMENTED, message)


def out_of_range(message: str) -> P4RTError:
    return P4RTError(grpc.StatusCode.OUT_OF_RANGE, message)


def failed_precondition(message: str) -> P4RTError:
    return P4RTError(grpc.StatusCode.FAILED_PRECONDITION, message)


def resource_exhausted(message: str) -> P4RTError:
    return P4RTError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
