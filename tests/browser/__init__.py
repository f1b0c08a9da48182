"""Tests that drive JupyterLab on kgw in a real browser; run by tox's C{browser} env only."""
