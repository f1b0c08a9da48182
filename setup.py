from setuptools import setup

setup(
    name="kgw",
    version="0.1.0",
    description="A Jupyter kernel gateway built as a Twisted daemon",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=[
        "kgw",
        "kgw.api",
        "kgw.http",
        "kgw.kernels",
        "kgw.kernels.store",
        "kgw.notebook_http",
        "twisted.plugins",
    ],
    package_data={"kgw.api": ["openapi.yaml"]},
    entry_points={"console_scripts": ["kgw = kgw.__main__:main"]},
    install_requires=[
        # tls: kgw.http.listen imports pyOpenSSL.
        "twisted[tls]>=24.11",
        "autobahn>=24.4",
        "txzmq>=1.0",
        "jupyter_client>=8",
        "nbformat>=5",
        "klein>=23",
        "service-identity>=21",
        "ipykernel>=6",
        # kgw.metrics: the /metrics page, through prometheus_client.twisted.
        "prometheus_client>=0.20",
        # kgw.api.openapi: the OpenAPI document is YAML.
        "pyyaml>=5.1",
        'tomli>=1.1; python_version < "3.11"',
    ],
    extras_require={
        # Kernels on other machines: gateway_provisioners' Kubernetes, Docker, YARN and SSH
        # (DistributedProvisioner, through paramiko) provisioners.
        "cluster": ["gateway_provisioners>=0.5", "paramiko>=3"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Framework :: Jupyter",
        "Programming Language :: Python :: 3",
    ],
)
