"""Blob storage drivers behind one interface (see :mod:`moorage.storage.base`)."""

from .base import PathNotFound, StatInfo, StorageDriver, StorageError, UploadWriter, blob_path

__all__ = ["PathNotFound", "StatInfo", "StorageDriver", "StorageError", "UploadWriter", "blob_path"]
