"""Settings of image scanning (``scanning.*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    registry_url: str | None = Field(
        None,
        description="The URL external scanner adapters pull images from (sent in the Harbor "
        "ScanRequest's registry.url); default: http.base_url.",
    )
    adapter_timeout_seconds: float = Field(
        3600.0,
        gt=0,
        le=86400,
        description="How long a scan waits for an external scanner adapter's report.",
    )
    max_file_mib: int = Field(
        64, ge=1, le=4096, description="Largest file read into memory from a layer (MiB)."
    )
    max_layer_gib: int = Field(
        64, ge=1, le=4096, description="Largest uncompressed layer read (GiB)."
    )

    @field_validator("registry_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("scanning.registry_url is an absolute http:// or https:// URL")
        return v
