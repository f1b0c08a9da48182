"""Kernel provisioners other than jupyter_client's local one: checking, recording, adopting.

A kernelspec picks its provisioner by name (C{metadata.kernel_provisioner.provisioner_name});
jupyter_client finds it among the C{jupyter_client.kernel_provisioners} entry points. This
module:

 - finds the kernelspecs that name a provisioner that is not installed, so that starting one
   is refused naming it, and start-up says so once (L{missingProvisioner}, L{checkSpecs});
 - puts kgw's own L{kgw.kernels.distributed.DistributedProvisioner} in place of
   gateway_provisioners' (its SSH launches block the event loop) when that is installed;
 - turns a remote kernel's C{get_provisioner_info()} into JSON for the state directory, and
   adopts such a kernel after a gateway crash with C{load_provisioner_info()} and C{poll()}.
"""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import KernelProvisionerFactory, LocalProvisioner
from twisted.logger import Logger

log = Logger()

DISTRIBUTED = "distributed-provisioner"
_THREADED = "kgw.kernels.distributed:DistributedProvisioner"


def provisionerName(spec: KernelSpec) -> str | None:
    """The provisioner a kernelspec names, or C{None} for jupyter_client's default."""
    stanza = spec.metadata.get("kernel_provisioner") if isinstance(spec.metadata, dict) else None
    if isinstance(stanza, dict) and isinstance(stanza.get("provisioner_name"), str):
        return stanza["provisioner_name"]
    return None


def isInstalled(name: str) -> bool:
    """Whether a provisioner of this name is registered (an entry point, or put in place)."""
    factory = KernelProvisionerFactory.instance()
    if name in factory.provisioners:
        return True
    try:
        factory.provisioners[name] = factory._get_provisioner(name)
    except Exception:
        return False
    return True


def missingProvisioner(specs: KernelSpecManager, name: str) -> str | None:
    """
    The provisioner that kernelspec C{name} names when it is not installed; C{None} when the
    kernelspec does not exist or its provisioner is installed.
    """
    directory = specs.find_kernel_specs().get(name)
    if directory is None:
        return None
    try:
        spec = KernelSpec.from_resource_dir(directory)
    except (OSError, ValueError):
        return None
    wanted = provisionerName(spec)
    return wanted if wanted is not None and not isInstalled(wanted) else None


def useThreadedLaunches(specs: KernelSpecManager) -> bool:
    """
    Make kernelspecs naming C{distributed-provisioner} get kgw's subclass, when
    gateway_provisioners is installed; whether it was. When a kernelspec names it, its
    module is imported and its response socket made now, at start-up, rather than by the first
    start (both take a while, on the event loop).
    """
    if not isInstalled(DISTRIBUTED):
        return False
    factory = KernelProvisionerFactory.instance()
    entry = EntryPoint(DISTRIBUTED, _THREADED, KernelProvisionerFactory.GROUP_NAME)
    factory.provisioners[DISTRIBUTED] = entry
    for directory in specs.find_kernel_specs().values():
        try:
            spec = KernelSpec.from_resource_dir(directory)
        except (OSError, ValueError):
            continue
        if provisionerName(spec) == DISTRIBUTED:
            entry.load()
            from kgw.kernels.distributed import serveResponses

            serveResponses()
            break
    return True


def checkSpecs(specs: KernelSpecManager) -> dict[str, str]:
    """
    Log, once, each kernelspec that names a provisioner that is not installed; return them,
    kernelspec name to provisioner name.
    """
    missing = {}
    for name in sorted(specs.find_kernel_specs()):
        provisioner = missingProvisioner(specs, name)
        if provisioner is not None:
            missing[name] = provisioner
            log.warn(
                "Kernelspec {name} names kernel provisioner {provisioner!r}, which is not "
                "installed: its kernels cannot start",
                name=name,
                provisioner=provisioner,
            )
    return missing


def _jsonable(value: Any) -> Any:
    """C{value} with bytes (a signing key) as text, so that it can be written as JSON."""
    return json.loads(json.dumps(value, default=lambda v: v.decode("ascii")))


async def provisionerInfo(manager: AsyncKernelManager) -> dict[str, Any] | None:
    """
    What a kernel's provisioner says it needs to find its kernel again, as JSON; C{None} for
    a local kernel, which is found again by its pid.
    """
    provisioner = manager.provisioner
    if provisioner is None or isinstance(provisioner, LocalProvisioner):
        return None
    try:
        info = await provisioner.get_provisioner_info()
    except Exception:
        log.failure(
            "Cannot get the provisioner info of kernel {kernelId}", kernelId=manager.kernel_id
        )
        return None
    return _jsonable(info)


async def adoptRemote(
    manager: AsyncKernelManager,
    kernelId: str,
    info: dict[str, Any],
    connectionInfo: dict[str, Any],
    launch: dict[str, Any],
) -> bool:
    """
    Give C{manager} a provisioner of its kernelspec loaded with the recorded C{info}, as if it
    had started the kernel itself (restarts included); whether the kernel is still alive.
    """
    manager.kernel_id = kernelId
    factory = KernelProvisionerFactory.instance(parent=manager.parent)
    provisioner = factory.create_provisioner_instance(kernelId, manager.kernel_spec, manager)
    await provisioner.load_provisioner_info(info)
    manager.provisioner = provisioner
    manager.load_connection_info(connectionInfo)  # type: ignore[arg-type]
    # What jupyter_client keeps from start_kernel, for a restart.
    manager._launch_args = dict(launch)
    return await provisioner.poll() is None
