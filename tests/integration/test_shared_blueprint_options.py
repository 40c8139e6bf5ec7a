"""tests/unit/test_blueprint_options.py again, where the ``service`` fixture is a replica of a service shared through
Redis or PostgreSQL (this directory's conftest): every backend must behave alike."""

from __future__ import annotations

from ..unit.test_blueprint_options import *  # noqa: F403
