"""Work under way that a stop must wait for, whatever becomes of it."""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredList

T = TypeVar("T")


class InFlight:
    """The Deferreds of work under way: L{whenDone} fires once each has, leaving results alone."""

    def __init__(self) -> None:
        self._waiters: set[Deferred[None]] = set()

    def track(self, work: Deferred[T]) -> Deferred[T]:
        """Count C{work} as under way until it fires; return it, its result untouched."""
        finished: Deferred[None] = Deferred()
        self._waiters.add(finished)

        def done(result: T) -> T:
            self._waiters.discard(finished)
            finished.callback(None)
            return result

        return work.addBoth(done)

    def __len__(self) -> int:
        return len(self._waiters)

    def whenDone(self) -> Deferred[Any]:
        """Fire once every work under way now has fired."""
        return DeferredList(list(self._waiters))


def whenDone(work: Deferred[Any]) -> Deferred[None]:
    """A new Deferred that fires with C{None} when C{work} has, leaving C{work}'s result alone."""
    waiter: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        waiter.callback(None)
        return result

    work.addBoth(fire)
    return waiter


def uncancellable(d: Deferred[T]) -> Deferred[T]:
    """A Deferred of C{d}'s result whose cancellation leaves C{d} running."""
    result: Deferred[T] = Deferred()

    def forward(outcome: Any) -> None:
        if not result.called:
            result.callback(outcome)

    d.addBoth(forward)
    return result
