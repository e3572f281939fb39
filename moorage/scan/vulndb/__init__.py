"""Vulnerability data: OSV advisories imported into the database, version order per ecosystem,
and the matcher that turns an image's inventory into findings (``rt.services["scan.matcher"]``).
"""
