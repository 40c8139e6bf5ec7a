#!/usr/bin/env python3
"""The Django demo: ``python3 manage.py runserver`` (development) or ``gunicorn -k gevent demo.wsgi``."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
