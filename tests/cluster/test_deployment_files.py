"""
The cluster files of etc/: the kernelspecs of gateway_provisioners' provisioners, loaded as
jupyter_client loads them, and the Kubernetes manifests, checked against the Kubernetes schemas.
"""

from __future__ import annotations

import os

import yaml
from jupyter_client.kernelspec import KernelSpecManager
from twisted.trial.unittest import SynchronousTestCase

from tests.cluster.support import missingPackages, skipUnlessRequired

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "etc")
# The Kubernetes release whose schemas the manifests are checked against.
KUBERNETES = "1.30.0"


class KernelspecTests(SynchronousTestCase):
    """etc/kernelspecs holds ready kernelspecs for the Kubernetes, Docker and SSH provisioners."""

    skip = skipUnlessRequired()

    def test_loaded(self):
        """Each kernelspec loads with jupyter_client, naming an installed provisioner."""
        problem = missingPackages()
        if problem is not None:
            self.fail(problem)
        from kgw.kernels.provisioners import isInstalled, provisionerName

        specs = KernelSpecManager(
            kernel_dirs=[os.path.join(ETC, "kernelspecs")], ensure_native_kernel=False
        )
        found = specs.find_kernel_specs()
        self.assertEqual(sorted(found), ["docker_python", "k8s_python", "ssh_python"])
        provisioners = {}
        for name in found:
            spec = specs.get_kernel_spec(name)
            provisioners[name] = provisionerName(spec)
            self.assertTrue(isInstalled(provisioners[name]), provisioners[name])
            self.assertIn("{response_address}", spec.argv)
            self.assertEqual(spec.language, "python")
        self.assertEqual(
            provisioners,
            {
                "docker_python": "docker-provisioner",
                "k8s_python": "kubernetes-provisioner",
                "ssh_python": "distributed-provisioner",
            },
        )


class ManifestTests(SynchronousTestCase):
    """etc/kubernetes runs kgw on a cluster; kubernetes-validate checks every document."""

    skip = skipUnlessRequired()

    def test_valid(self):
        """Every document of the manifests is valid for its kind, strictly (no unknown field)."""
        import kubernetes_validate

        kinds = []
        directory = os.path.join(ETC, "kubernetes")
        for fileName in sorted(os.listdir(directory)):
            with open(os.path.join(directory, fileName)) as f:
                for document in yaml.safe_load_all(f):
                    kubernetes_validate.validate(document, KUBERNETES, strict=True)
                    kinds.append(document["kind"])
        for kind in ("Deployment", "Service", "ServiceAccount", "ClusterRole", "ConfigMap"):
            self.assertIn(kind, kinds)

    def test_invalidRefused(self):
        """The check has teeth: a Deployment with a misspelt field is refused."""
        import kubernetes_validate

        with open(os.path.join(ETC, "kubernetes", "kgw.yaml")) as f:
            deployment = next(d for d in yaml.safe_load_all(f) if d["kind"] == "Deployment")
        deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
        with self.assertRaises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
