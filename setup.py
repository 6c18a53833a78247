"""Packaging for caucase."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "caucase" / "__init__.py").read_text(), re.M
).group(1)  # type: ignore[union-attr]

setup(
    name="caucase",
    version=VERSION,
    description="Certificate authority for users and services",
    long_description=(HERE / "README.rst").read_text() + "\n" + (HERE / "CHANGES.txt").read_text(),
    long_description_content_type="text/x-rst",
    license="GPL-3.0-or-later",
    classifiers=[
        "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)",
        "Programming Language :: Python :: 3",
        "Topic :: Security :: Cryptography",
    ],
    python_requires=">=3.9",
    packages=find_packages(include=["caucase", "caucase.*"]),
    install_requires=[
        "cryptography>=42",
        "pyOpenSSL>=24",
        "pem>=23.1",
        "prometheus_client>=0.20",
        "josepy>=2.0",
        "dnspython>=2.6",
    ],
    extras_require={
        # PostgreSQL storage (caucased --db postgresql://...).
        "postgresql": ["psycopg[binary]>=3.1"],
        "test": [
            "psycopg[binary]>=3.1",
            "pytest>=8",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "ruff>=0.6",
            "mypy>=1.10",
            "pkilint>=0.10",
            "selenium>=4.20",
            "atheris>=2.3",
            "acme>=2.0",
        ],
    },
    entry_points={
        "console_scripts": [
            "caucase = caucase.cli.caucase:main",
            "caucase-updater = caucase.cli.updater:main",
            "caucase-probe = caucase.cli.probe:main",
            "caucase-rerequest = caucase.cli.rerequest:main",
            "caucase-key-id = caucase.cli.key_id:main",
            "caucased = caucase.cli.server:main",
            "caucased-manage = caucase.cli.manage:main",
        ],
    },
    zip_safe=True,
)
