"""Every teaching notebook runs top to bottom (tutorials must not rot).

The notebooks run in their own kernels, two at a time (each kernel keeps torch to one thread, so two use the
two cores of a small CI machine; serially they took about 300 s of the suite), longest first; each test then
reports its own notebook's outcome.
"""

import asyncio
import glob
import os

import pytest

NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks", "*.ipynb")))
#: Kernels at once.
PARALLEL = 2


def _execute_all(paths, artifacts_dir) -> dict:
    """``{path: None or the exception}`` after running every notebook, ``PARALLEL`` at a time, largest file first."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    async def run_all():
        gate = asyncio.Semaphore(PARALLEL)

        async def one(path):
            async with gate:
                nb = nbformat.read(path, as_version=4)
                client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                                 resources={"metadata": {"path": os.path.dirname(path)}})
                try:
                    await client.async_execute()
                    error = None
                except Exception as exc:  # reported by the notebook's own test
                    error = exc
                nbformat.write(nb, os.path.join(artifacts_dir, "executed-" + os.path.basename(path)))
                return path, error

        order = sorted(paths, key=os.path.getsize, reverse=True)
        return dict(await asyncio.gather(*(one(p) for p in order)))

    return asyncio.run(run_all())


@pytest.fixture(scope="module")
def executed():
    from conftest import ARTIFACTS

    os.makedirs(ARTIFACTS, exist_ok=True)
    return _execute_all(NOTEBOOKS, ARTIFACTS)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_executes(path, executed):
    error = executed[path]
    if error is not None:
        raise error
