"""tests/unit/test_presence_service.py again, where the ``pair`` fixture is two replicas of a service shared through
Redis or PostgreSQL (this directory's conftest): counts equal in both, reports crossing between them."""

from __future__ import annotations

from ..unit.test_presence_service import *  # noqa: F403
