"""Package layout (everything else is in pyproject.toml).

The dashboard lives in the repository's ``app/`` folder (``panel serve app/main.py``) and is installed as
the package ``latentlab_app``, so that no top-level ``app`` lands in site-packages; the library
``latentlab`` never imports it.  setuptools' automatic discovery cannot rename a folder, hence this file.
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["latentlab", "latentlab.*"]) + ["latentlab_app"],
      package_dir={"latentlab_app": "app"})
