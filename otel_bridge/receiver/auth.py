"""Bearer-token auth for both receivers: `authorization: Bearer <token>`, compared in constant time.

The gRPC health service stays open: probes and load balancers carry no token, and it reveals nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import grpc

__all__ = ["BearerToken", "GrpcBearerAuth", "UNAUTHENTICATED_MESSAGE"]

UNAUTHENTICATED_MESSAGE = "missing or wrong bearer token: send the header `authorization: Bearer <token>`"
_OPEN_GRPC_PREFIX = "/grpc.health.v1.Health/"


class BearerToken:
    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def accepts(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, credentials = authorization.partition(" ")
        # The scheme is case-insensitive (RFC 9110); the token is compared in constant time.
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._token)


async def _deny(request: bytes, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)


_DENY_HANDLER = grpc.unary_unary_rpc_method_handler(_deny)


class GrpcBearerAuth(grpc.aio.ServerInterceptor):
    """Refuses every call without the token (UNAUTHENTICATED) before its request is even decoded."""

    def __init__(self, token: BearerToken, *, on_refused: Callable[[], None]) -> None:
        self._token = token
        self._on_refused = on_refused

    async def intercept_service(self, continuation, handler_call_details):  # noqa: ANN001 (grpc's signature)
        if handler_call_details.method.startswith(_OPEN_GRPC_PREFIX):
            return await continuation(handler_call_details)
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and self._token.accepts(value):
                return await continuation(handler_call_details)
        self._on_refused()
        return _DENY_HANDLER
