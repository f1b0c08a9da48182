"""Where sessions are kept: a book that cannot be written never leaves a kernel behind."""

from __future__ import annotations

from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred

from kgw.api.app import GatewayAPI
from kgw.api.factory import ChannelsFactory
from kgw.api.sessions import MemoryBook, Session, SessionRegistry
from kgw.errors import StoreUnavailable
from tests.api.test_api import NOTEBOOK, APITestCase
from tests.fakes import makeRegistry


class UnwritableBook(MemoryBook):
    """A book whose store went away: nothing can be kept in it."""

    async def put(self, session: Session) -> None:
        raise StoreUnavailable("The kernel store cannot be reached")


class UnwritableBookTests(APITestCase):
    def setUp(self) -> None:
        self.kernels = makeRegistry(self)
        self.book = UnwritableBook()
        api = GatewayAPI(
            self.kernels,
            SessionRegistry(self.kernels, self.book),
            ChannelsFactory(1024 * 1024),
            listKernels=True,
        )
        self.stub = StubTreq(api.app.resource())

    def test_kernelStartedForSessionShutDown(self) -> None:
        """A session that cannot be kept is answered 503, and the kernel started for it is
        shut down: nobody could find it."""
        answer = self.call("POST", "/api/sessions", NOTEBOOK)
        self.assertEqual(answer.code, 503, answer.body)
        self.assertIn("cannot be reached", answer.body["message"])
        self.assertEqual(len(self.kernels), 0)

    def test_kernelStartedForMoveShutDown(self) -> None:
        """A session moved to a new kernel that cannot be kept is answered 503; the new kernel
        is shut down, the session's kernel is left running."""
        kernel = self.successResultOf(self.kernels.startKernel())
        session = Session("s-1", "a.ipynb", "a", "notebook", kernel.id)
        self.successResultOf(ensureDeferred(MemoryBook.put(self.book, session)))
        answer = self.call("PATCH", "/api/sessions/s-1", {"kernel": {"name": "other"}})
        self.assertEqual(answer.code, 503, answer.body)
        self.assertEqual([k.id for k in self.kernels.kernels()], [kernel.id])
