"""gateway_provisioners' C{DistributedProvisioner}, made fit for a gateway that must not freeze.

Upstream, a kernel is launched on a remote host over SSH with paramiko, called straight from
the event loop: every launch stops the gateway for the length of an SSH handshake (or, for a
host that does not answer, for as long as the TCP stack keeps trying). And each poll, signal or
shutdown of a kernel connects to its launcher's listener with no deadline, so a host that went
away stalls whatever asked. This subclass keeps everything else of upstream and changes three
things:

 - the blocking SSH launch runs on a thread, bounded by the launch timeout;
 - a talk with a launcher's listener gives up after C{listener_timeout} seconds; the host is
   then taken as unreachable and its kernel as gone;
 - a restarted kernel stays on its host, and a kernel whose host is unreachable (its SSH
   port does not answer either) is not restarted: the gateway then declares it dead rather
   than waiting out a launch timeout on each try.

It is imported only when gateway_provisioners is installed (C{pip install kgw[cluster]});
L{kgw.kernels.provisioners} puts it in place of upstream's class for the kernelspecs that name
C{distributed-provisioner}.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from gateway_provisioners.config_mixin import ssh_port
from gateway_provisioners.distributed import DistributedProvisioner as _Upstream
from gateway_provisioners.remote_provisioner import RemoteProvisionerBase
from gateway_provisioners.response_manager import ResponseManager
from traitlets import Float
from twisted.logger import Logger

log = Logger()

#: The most a launcher may send on the response socket (its encrypted connection info).
MAX_RESPONSE = 64 * 1024


def serveResponses() -> ResponseManager:
    """
    The response manager, where kernel launchers send their connection info, made to wait for
    them without blocking the event loop.

    Upstream polls its socket every 0.1 ms, each poll blocking the loop for up to
    C{GP_SOCKET_TIMEOUT} (10 ms): the gateway would answer every request tens of milliseconds
    late while any remote kernel is configured. Here the socket is non-blocking and an asyncio
    accept loop reads each launcher's response. Making the manager (an RSA key pair, a bound
    socket) takes a while too: call this at start-up.
    """
    manager = ResponseManager.instance()
    if getattr(manager, "_kgwServing", False):
        return manager
    manager._kgwServing = True
    if manager._connection_processor is not None:
        manager._connection_processor.stop()
    listening = manager._response_socket
    listening.setblocking(False)
    loop = asyncio.get_event_loop()

    async def receive(connection: socket.socket) -> None:
        data = b""
        try:
            while len(data) <= MAX_RESPONSE:
                chunk = await loop.sock_recv(connection, 4096)
                if not chunk:
                    manager._post_connection(manager._decode_payload(data.decode("utf-8")))
                    return
                data += chunk
            log.warn("A kernel launcher's response was too long; dropped")
        except Exception as e:
            log.warn("A kernel launcher's response was unusable: {error}", error=e)
        finally:
            connection.close()

    receiving: set[asyncio.Future[None]] = set()

    async def accept() -> None:
        while manager._response_socket is listening:
            try:
                connection, _ = await loop.sock_accept(listening)
            except OSError:
                return  # closed by stop_response_manager
            connection.setblocking(False)
            task = asyncio.ensure_future(receive(connection))
            receiving.add(task)
            task.add_done_callback(receiving.discard)

    accepting = asyncio.ensure_future(accept())
    stopResponseManager = manager.stop_response_manager

    def stop() -> None:
        # Before the socket is closed: its descriptor may be reused at once.
        if manager._response_socket is listening:
            loop.remove_reader(listening.fileno())
            accepting.cancel()
        stopResponseManager()

    manager.stop_response_manager = stop
    return manager


class DistributedProvisioner(_Upstream):
    """Kernels on SSH hosts, launched off the event loop."""

    assigned_host: str

    listener_timeout = Float(
        5.0,
        config=True,
        help="Seconds a poll, signal or shutdown request to a kernel's launcher may take; "
        "past them the kernel's host is taken as unreachable.",
    )

    def __init__(self, **kwargs: Any) -> None:
        serveResponses()
        super().__init__(**kwargs)
        #: Set once the launcher's listener did not answer in time.
        self.unreachable = False

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict[str, Any]:
        env = dict(kwargs.get("env") or {})
        restarting = bool(self.assigned_host)
        if restarting:
            if self.unreachable and not await self._answers(self.assigned_host):
                raise RuntimeError(
                    f"Kernel {self.kernel_id} is not restarted: its host "
                    f"{self.assigned_host} does not answer"
                )
            env["KERNEL_REMOTE_HOST"] = self.assigned_host
        self.kernel_log = None
        self.assigned_host = self._determine_next_host(env)
        host = self.assigned_host
        loop = asyncio.get_running_loop()
        try:
            self.ip = await loop.run_in_executor(None, socket.gethostbyname, host)
        except OSError as e:
            raise RuntimeError(f"Cannot start a kernel on host {host}: {e}") from e
        self.assigned_ip = self.ip
        launch = RemoteProvisionerBase._scrub_kwargs(kwargs)
        # On a thread: paramiko blocks for the whole handshake and the remote command. A thread
        # still waiting on a host that does not answer ends when its TCP connect gives up.
        work = loop.run_in_executor(None, lambda: self._launch_remote_process(cmd, **launch))
        try:
            pid = await asyncio.wait_for(work, self.launch_timeout)
            self.pid = int(pid)
        except asyncio.TimeoutError:
            raise RuntimeError(
                f"Cannot start a kernel on host {host}: no SSH answer within "
                f"{self.launch_timeout} s"
            ) from None
        except Exception as e:
            raise RuntimeError(f"Cannot start a kernel on host {host}: {e}") from e
        self.unreachable = False
        self.log_kernel_launch(cmd)
        await self.confirm_remote_startup()
        return self.connection_info

    async def _answers(self, host: str) -> bool:
        """Whether C{host} accepts a connection on its SSH port within C{listener_timeout}."""
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, ssh_port), self.listener_timeout
            )
        except (OSError, asyncio.TimeoutError):
            return False
        writer.close()
        return True

    def _determine_next_host(self, env_dict: dict[str, Any]) -> str:
        """
        The host of the next kernel: C{KERNEL_REMOTE_HOST} if set, else by the load balancing
        algorithm over this kernelspec's C{remote_hosts}. (Upstream's least-connection choice
        fails on its first kernel, its count of hosts never being filled, and would pick among
        the hosts of every kernelspec.)
        """
        tracker = _Upstream.kernel_on_host
        pinned = env_dict.get("KERNEL_REMOTE_HOST")
        if pinned:
            host = pinned
        elif self.least_connection:
            counts = tracker._host_kernels
            host = min(self.remote_hosts, key=lambda h: counts.get(h, 0))
        else:
            host = self.remote_hosts[_Upstream.host_index % len(self.remote_hosts)]
            _Upstream.host_index += 1
        if self.least_connection:
            tracker.add_kernel_id(host, self.kernel_id)
        return host

    async def _send_listener_request(
        self, request: dict[str, Any], shutdown_socket: bool | None = False
    ) -> None:
        try:
            await asyncio.wait_for(
                super()._send_listener_request(request, shutdown_socket), self.listener_timeout
            )
        except asyncio.TimeoutError:
            self.unreachable = True
            raise TimeoutError(
                f"host {self.assigned_host} did not answer within {self.listener_timeout} s"
            ) from None

    async def kill(self, restart: bool = False) -> None:
        if self.unreachable:
            if not await self._answers(self.assigned_host):
                return  # nothing reaches the process: it is given up for gone
            # A listener slow to answer (a busy host), not a host gone: end the kernel.
            self.unreachable = False
        await super().kill(restart)

    async def send_signal(self, signum: int) -> None:
        if not self.unreachable:
            await super().send_signal(signum)

    async def poll(self) -> int | None:
        if self.unreachable and self.comm_port > 0:
            return 1
        return await super().poll()
