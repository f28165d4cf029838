"""Package layout (everything else is in pyproject.toml).

The dashboard lives in the repository's ``app/`` folder (``panel serve app/main.py``) and is installed as
the package ``latentlab_app`` (with its subpackages), so that no top-level ``app`` lands in site-packages;
the library ``latentlab`` never imports it.  setuptools' automatic discovery cannot rename a folder, hence
this file.
"""

from setuptools import find_packages, setup

APP = ["latentlab_app"] + [f"latentlab_app.{name}" for name in find_packages("app")]

setup(packages=find_packages(include=["latentlab", "latentlab.*"]) + APP, package_dir={"latentlab_app": "app"})
