"""Domain errors: what went wrong, in the gateway's own terms.

The HTTP edge maps each of these to a status code in one place (L{kgw.http.errors}); the rest of
the code never speaks HTTP.
"""


class GatewayError(Exception):
    """Base of the errors a client can be told about; the message is safe to show."""


class InvalidRequest(GatewayError):
    """The request is malformed: bad JSON, a field of the wrong type."""


class NoSuchKernel(GatewayError):
    """No running kernel has this id."""

    def __init__(self, kernelId: str) -> None:
        super().__init__(f"Kernel does not exist: {kernelId}")


class NoSuchKernelSpec(GatewayError):
    """No kernelspec has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"No such kernel named {name}")


class ProvisionerNotInstalled(NoSuchKernelSpec):
    """A kernelspec names a kernel provisioner that is not installed: its kernels cannot start."""

    def __init__(self, name: str, provisioner: str) -> None:
        GatewayError.__init__(
            self,
            f"Kernelspec {name} names kernel provisioner {provisioner!r}, which is not installed "
            "on the gateway",
        )


class NoSuchSession(GatewayError):
    """No session has this id."""

    def __init__(self, sessionId: str) -> None:
        super().__init__(f"Session not found: {sessionId}")


class NoSuchResource(GatewayError):
    """A kernelspec resource file that does not exist or lies outside its directory."""


class KernelLimitReached(GatewayError):
    """Starting one more kernel would exceed C{max_kernels}."""


class Forbidden(GatewayError):
    """The configuration does not allow this request."""


class KernelStartFailed(GatewayError):
    """A kernel process could not be started or never answered."""
