"""Moorage: a secure, self-hosted registry for container images and OCI artifacts."""

__version__ = "0.1.0"
