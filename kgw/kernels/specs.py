"""Kernelspecs by name: their JSON and resource directory, and a clear error for a missing one."""

from __future__ import annotations

from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.kernelspec import NoSuchKernel as _NoSuchSpec

from kgw.errors import NoSuchKernelSpec, ProvisionerNotInstalled
from kgw.kernels.provisioners import missingProvisioner


def specModel(specs: KernelSpecManager, name: str) -> tuple[dict[str, Any], str]:
    """
    A kernelspec's JSON and its resource directory.

    @raise ProvisionerNotInstalled: if it names a kernel provisioner that is not installed.
    @raise NoSuchKernelSpec: if there is no kernelspec of this name.
    """
    try:
        spec = specs.get_kernel_spec(name)
    except (_NoSuchSpec, KeyError, ValueError):
        provisioner = missingProvisioner(specs, name)
        if provisioner is not None:
            raise ProvisionerNotInstalled(name, provisioner) from None
        raise NoSuchKernelSpec(name) from None
    return spec.to_dict(), spec.resource_dir
