"""Calling asyncio code (jupyter_client) from Twisted code.

The gateway runs on Twisted's asyncio reactor, so coroutines and Deferreds share one event loop.
This module is the one place where an asyncio future becomes a Deferred, and so the one place
where asyncio's cancellation is translated into Twisted's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


def _translateCancel(failure: Failure) -> Failure:
    if failure.check(asyncio.CancelledError) and failure.value is not None:
        return Failure(CancelledError(*failure.value.args))
    return failure


def fromCoroutine(coro: Awaitable[T], shield: bool = False) -> Deferred[T]:
    """
    Run C{coro} (a coroutine, or any awaitable: jupyter_client's methods are typed so) as an
    asyncio task and return a Deferred of its result.

    @param shield: when true, cancelling the Deferred does not cancel the task: use it for work
        that must finish even if the client who asked for it goes away (starting a kernel).
    """
    task = asyncio.ensure_future(coro)
    future = asyncio.shield(task) if shield else task
    return Deferred.fromFuture(future).addErrback(_translateCancel)
