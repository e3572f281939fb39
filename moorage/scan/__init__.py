"""Vulnerability scanning and SBOMs: what is inside an image (inventory), which advisories apply
(matching against an offline OSV database), and the policies that act on it.

``model`` holds the types the inventory hands to matching and to SBOM export.
"""
