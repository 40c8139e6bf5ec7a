"""Moved to :mod:`pubsubsse.servers.shutdown`; this name keeps existing imports working."""

from .servers.shutdown import *  # noqa: F403
from .servers.shutdown import __all__  # noqa: F401
