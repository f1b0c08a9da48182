"""
Test hosts for remote kernels: network namespaces made by the test, each with its own sshd.

Each L{TestHost} is a network namespace joined to this one by a veth pair, with addresses of the
benchmarking range 198.18.0.0/15 (RFC 2544) that nothing else on a machine uses: the side in
this namespace is C{198.18.N.1}, the host's side C{198.18.N.2}. A dummy interface holds the
gateway's own address, L{GATEWAY_ADDRESS}, where the kernel launchers report back; each host has
a route to it and to nothing else. Every host runs C{sshd -D -f <its own config>}, with its own
host key, trusting one client key; that key and a C{known_hosts} naming every host live in a
temporary C{HOME}. L{TestCluster.stop} ends every process of the namespaces by its pid, stops the
sshd processes, and deletes the namespaces and the dummy interface.

All of it needs root (C{CAP_NET_ADMIN}) and Debian's C{openssh-server}; without them
L{TestCluster.start} raises L{ClusterUnavailable} saying what is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"

# A slot per test run, so that two runs on one machine (a developer's and tox's) do not meet.
_SLOT = os.getpid() % 100


def _run(*command: str) -> str:
    """Run C{command}; its output, or L{ClusterUnavailable} with its error."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise ClusterUnavailable(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result.stdout


class ClusterUnavailable(Exception):
    """The test hosts cannot be made here; the message says why and what to do."""


def missing() -> str | None:
    """What making test hosts needs and this machine lacks, said as how to get it; or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN): run the cluster tests as root"
    for program, package in ((SSHD, "openssh-server"), (SSH_KEYGEN, "openssh-client")):
        if not os.access(program, os.X_OK):
            return f"no {program}: apt-get install -y {package}"
    if shutil.which("ip") is None:
        return "no ip command: apt-get install -y iproute2"
    return None


@dataclass
class TestHost:
    """One test host: a network namespace, its veth pair and its sshd."""

    index: int
    directory: str
    namespace: str = ""
    address: str = ""
    routerAddress: str = ""
    sshd: subprocess.Popen[bytes] | None = None
    hostKey: str = ""

    def __post_init__(self) -> None:
        self.namespace = f"kgw{_SLOT}h{self.index}"
        # Interface names: 15 characters at most.
        self.outside = f"kgw{_SLOT}v{self.index}o"
        self.inside = f"kgw{_SLOT}v{self.index}i"
        subnet = f"198.18.{_SLOT * 2 + self.index}"
        self.address, self.routerAddress = f"{subnet}.2", f"{subnet}.1"

    def create(self, gatewayAddress: str, authorizedKeys: str) -> None:
        """Make the namespace and its link, and start its sshd."""
        _run("ip", "netns", "add", self.namespace)
        _run("ip", "link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        _run("ip", "link", "set", self.inside, "netns", self.namespace)
        _run("ip", "addr", "add", f"{self.routerAddress}/24", "dev", self.outside)
        _run("ip", "link", "set", self.outside, "up")
        inNamespace = ("ip", "-n", self.namespace)
        _run(*inNamespace, "addr", "add", f"{self.address}/24", "dev", self.inside)
        _run(*inNamespace, "link", "set", self.inside, "up")
        _run(*inNamespace, "link", "set", "lo", "up")
        # The gateway's address, and nothing beyond this subnet.
        _run(*inNamespace, "route", "add", f"{gatewayAddress}/32", "via", self.routerAddress)
        self._startSshd(authorizedKeys)

    def _startSshd(self, authorizedKeys: str) -> None:
        os.makedirs(self.directory, exist_ok=True)
        key = os.path.join(self.directory, "ssh_host_ed25519_key")
        _run(SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", key)
        with open(key + ".pub") as f:
            self.hostKey = f.read().strip()
        config = os.path.join(self.directory, "sshd_config")
        with open(config, "w") as f:
            f.write(
                f"ListenAddress {self.address}\n"
                "Port 22\n"
                f"HostKey {key}\n"
                f"AuthorizedKeysFile {authorizedKeys}\n"
                f"PidFile {os.path.join(self.directory, 'sshd.pid')}\n"
                "PermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "UsePAM no\n"
                "StrictModes no\n"
                "UseDNS no\n"
                "LogLevel ERROR\n"
            )
        # sshd insists on its privilege separation directory, as the Debian service makes it.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log = open(os.path.join(self.directory, "sshd.log"), "wb")
        # A PID namespace of its own too, as on another machine: a kernel's pid there means
        # nothing here. When sshd, its first process, ends, the kernel ends every process in it.
        self.sshd = subprocess.Popen(
            [
                "unshare",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "ip",
                "netns",
                "exec",
                self.namespace,
                SSHD,
                "-D",
                "-e",
                "-f",
                config,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while not self.listening():
            if self.sshd.poll() is not None or time.monotonic() > deadline:
                raise ClusterUnavailable(
                    f"sshd of {self.namespace} did not start: {self.sshdLog()}"
                )
            time.sleep(0.05)

    def sshdLog(self) -> str:
        try:
            with open(os.path.join(self.directory, "sshd.log"), errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def listening(self) -> bool:
        """Whether something in the namespace listens on port 22."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.namespace, "cat", "/proc/net/tcp"],
            capture_output=True,
            text=True,
        )
        return any(
            line.split()[1].endswith(":0016") and line.split()[3] == "0A"
            for line in result.stdout.splitlines()[1:]
        )

    def pids(self) -> set[int]:
        """The processes running in this host's network namespace."""
        result = subprocess.run(
            ["ip", "netns", "pids", self.namespace], capture_output=True, text=True
        )
        return {int(pid) for pid in result.stdout.split()}

    def kernelPids(self) -> set[int]:
        """
        The processes of this host other than its sshd (and the C{unshare} that started it):
        the kernels and their launchers, by their pids on the host.
        """
        found = set()
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            inner = [int(p) for p in fields.get("NSpid", "").split()]
            if len(inner) > 1 and inner[-1] != 1:
                found.add(inner[-1])
        return found

    def describe(self) -> str:
        """The command lines of this host's processes besides sshd, for a failure message."""
        lines = []
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    lines.append(f.read().replace(b"\0", b" ").decode(errors="replace")[:120])
            except OSError:
                pass
        return "; ".join(lines)

    def linkDown(self) -> None:
        """Take the host off the network: its side of the veth pair goes down."""
        _run("ip", "-n", self.namespace, "link", "set", self.inside, "down")

    def linkUp(self) -> None:
        _run("ip", "-n", self.namespace, "link", "set", self.inside, "up")
        # Bringing the link up again drops the routes through it.
        subprocess.run(
            [
                "ip",
                "-n",
                self.namespace,
                "route",
                "replace",
                f"{GATEWAY_ADDRESS}/32",
                "via",
                self.routerAddress,
            ],
            capture_output=True,
        )

    def stopSshd(self) -> None:
        """Stop this host's sshd by its pid: new SSH connections are refused."""
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()

    def destroy(self) -> set[int]:
        """
        End every process of the namespace by its pid, stop sshd, delete the namespace (which
        deletes the veth pair). Returns the pids that were left besides sshd.
        """
        left = self.kernelPids()
        # Ending sshd, the first process of the host's PID namespace, ends all the others.
        self.stopSshd()
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True)
        return left


GATEWAY_ADDRESS = f"198.19.{_SLOT}.1"


@dataclass
class TestCluster:
    """
    Two (or more) test hosts, a client key they trust, and a C{HOME} whose C{.ssh} holds that
    key and a C{known_hosts} of theirs.
    """

    directory: str
    count: int = 2
    hosts: list[TestHost] = field(default_factory=list)
    gatewayAddress: str = GATEWAY_ADDRESS
    home: str = ""

    def __post_init__(self) -> None:
        self.dummy = f"kgw{_SLOT}gw"
        self.home = os.path.join(self.directory, "home")

    def start(self) -> TestCluster:
        """
        Make the hosts.

        @raise ClusterUnavailable: saying why they cannot be made; whatever was made is removed.
        """
        problem = missing()
        if problem is not None:
            raise ClusterUnavailable(problem)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        ssh = os.path.join(self.home, ".ssh")
        os.makedirs(ssh, mode=0o700)
        clientKey = os.path.join(ssh, "id_ed25519")
        _run(SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", clientKey)
        authorizedKeys = os.path.join(self.directory, "authorized_keys")
        shutil.copyfile(clientKey + ".pub", authorizedKeys)
        # A veth pair with both ends here stands in for a dummy interface (a kernel may lack it).
        _run("ip", "link", "add", self.dummy, "type", "veth", "peer", "name", self.dummy + "p")
        _run("ip", "addr", "add", f"{self.gatewayAddress}/32", "dev", self.dummy)
        _run("ip", "link", "set", self.dummy, "up")
        _run("ip", "link", "set", self.dummy + "p", "up")
        for index in range(1, self.count + 1):
            host = TestHost(index, os.path.join(self.directory, f"host{index}"))
            self.hosts.append(host)
            host.create(self.gatewayAddress, authorizedKeys)
        with open(os.path.join(ssh, "known_hosts"), "w") as f:
            for host in self.hosts:
                f.write(f"{host.address} {host.hostKey.rsplit(' ', 1)[0]}\n")

    def stop(self) -> set[int]:
        """Tear everything down; the pids that had to be killed besides the sshd processes."""
        left: set[int] = set()
        for host in self.hosts:
            left |= host.destroy()
        subprocess.run(["ip", "link", "del", self.dummy], capture_output=True)
        return left

    @property
    def addresses(self) -> list[str]:
        return [host.address for host in self.hosts]

    def hostOf(self, address: str) -> TestHost:
        return next(host for host in self.hosts if host.address == address)
