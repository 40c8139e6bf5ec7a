"""tests/unit/test_history_service.py again, on replicas of a service shared through Redis or PostgreSQL
(this directory's conftest): the same history message in every process, trims and removals through the log."""

from __future__ import annotations

from ..unit.test_history_service import *  # noqa: F403
