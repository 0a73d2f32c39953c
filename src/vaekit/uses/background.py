"""Deprecated: the module moved (vaekit._deprecated.MOVED, CHANGELOG.md)."""

from vaekit._deprecated import redirect

redirect(__name__)
