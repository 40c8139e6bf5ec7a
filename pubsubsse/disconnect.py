"""Moved to :mod:`pubsubsse.servers.disconnect`; this name keeps existing imports working."""

from .servers.disconnect import *  # noqa: F403
from .servers.disconnect import __all__  # noqa: F401
