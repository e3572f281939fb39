"""Settings of image scanning (``scanning.*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ScanningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on_push: bool = Field(
        True,
        description="Scan every image manifest when it is pushed (queued as a background job; "
        "a push never waits for it). An organization can override it through the API.",
    )
    attach_sbom: bool = Field(
        False,
        description="After each scan, push the image's SPDX and CycloneDX SBOMs into its "
        "repository as OCI referrers (artifactType set; once per image and format).",
    )
    max_file_mib: int = Field(
        64, ge=1, le=4096, description="Largest file read into memory from a layer (MiB)."
    )
    max_layer_gib: int = Field(
        64, ge=1, le=4096, description="Largest uncompressed layer read (GiB)."
    )
