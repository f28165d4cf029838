"""What `pip install .` installs: the library, the built-in data, and the dashboard as `latentlab_app` (never `app`)."""

import glob
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_wheel_installs_every_dashboard_module_as_latentlab_app_and_no_top_level_app(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                    ROOT], check=True, capture_output=True, timeout=600)
    (wheel,) = glob.glob(str(tmp_path / "latentlab-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    app_files = [os.path.relpath(p, os.path.join(ROOT, "app")) for p in glob.glob(os.path.join(ROOT, "app", "**", "*"),
                                                                                     recursive=True)
                 if os.path.isfile(p) and "__pycache__" not in p]
    missing = [f for f in app_files if f"latentlab_app/{f}".replace(os.sep, "/") not in names]
    assert not missing, f"not installed: {missing}"
    assert not any(n.startswith("app/") for n in names)
    assert any(n.startswith("latentlab/data/builtin/chignolin") for n in names)
    assert "latentlab/cli/serve.py" in names and "latentlab/__main__.py" in names
