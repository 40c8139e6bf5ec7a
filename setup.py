"""Packaging for pubsubsse.

The browser scripts have one source each, ``static/pubsubsse.js`` (the client) and
``static/pubsubsse-html.js`` (the live HTML helper for htmx and Turbo); the build copies them into the package
(``pubsubsse/static/``), where the HTTP layer serves them from.
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

here = Path(__file__).parent
version = next(
    line.split('"')[1]
    for line in (here / "pubsubsse" / "__init__.py").read_text().splitlines()
    if line.startswith("__version__")
)


class BuildWithClient(build_py):
    """Copy the browser client and the live HTML helper into the built package."""

    def run(self):
        """Build the package, then put the browser client into it."""
        super().run()
        target = Path(self.build_lib) / "pubsubsse" / "static"
        target.mkdir(parents=True, exist_ok=True)
        for script in ("pubsubsse.js", "pubsubsse-html.js"):
            shutil.copyfile(here / "static" / script, target / script)


setup(
    name="pubsubsse",
    version=version,
    description="Topic-based publish/subscribe over Server-Sent Events for Flask, Django and other WSGI apps",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["pubsubsse", "pubsubsse.*"]),
    package_data={"pubsubsse": ["py.typed"]},
    cmdclass={"build_py": BuildWithClient},
    install_requires=["werkzeug>=2.2", "blinker>=1.6", "itsdangerous>=2.0"],
    extras_require={
        "flask": ["flask>=2.2"],
        "gevent": ["gevent>=22.10", "gunicorn[gevent]>=21.2"],
        # hiredis: redis-py parses replies in C (measured: about half the CPU per entry the reader applies)
        "redis": ["redis>=5.0", "hiredis>=2.0"],
        "postgres": ["psycopg[binary]>=3.2"],
        "metrics": ["prometheus-client>=0.17"],
        "django": ["django>=4.2"],
        "test": [
            "flask>=2.2",
            "pytest>=7.4",
            "pytest-timeout>=2.1",
            "pytest-xdist>=3.5",
            "gevent>=22.10",
            "gunicorn[gevent]>=21.2",
            "httpx>=0.24",
            "httpx-sse>=0.4",
            "sseclient-py>=1.8",
            "hypothesis>=6.80",
            "playwright>=1.40",
            "psutil>=5.9",
            "redis>=5.0",
            "hiredis>=2.0",
            "psycopg[binary]>=3.2",
            "prometheus-client>=0.17",
            "Flask-Login>=0.6",
            "celery[redis]>=5.3",
            "django>=4.2",
            "sqlalchemy>=2.0",
            "Flask-SQLAlchemy>=3.1",
            "websocket-client>=1.6",
            "waitress>=3.0",
            "pyuwsgi>=2.0.28; sys_platform == 'linux'",
        ],
        "dev": [
            "ruff>=0.4",
            "pytest>=7.4",
            "pytest-timeout>=2.1",
            "pytest-xdist>=3.5",
            "mypy>=1.10",
            "pyright>=1.1.380",
            "django-stubs>=5.0",
            "typing-extensions>=4.6",
            "sphinx>=7.2",
            "furo>=2024.1.29",
            "myst-parser>=3.0",
        ],
    },
    classifiers=[
        "Framework :: Flask",
        "Framework :: Django",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP :: Dynamic Content",
        "Typing :: Typed",
    ],
)
