"""Moved to :mod:`pubsubsse.flask.blueprint`; this name keeps existing imports working."""

from .flask.blueprint import ACTIONS, Authorize, create_blueprint

__all__ = ["create_blueprint", "ACTIONS", "Authorize"]
