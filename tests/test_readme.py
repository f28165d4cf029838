"""The README's Python example runs as written and prints the right answer."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks():
    with open(README) as fh:
        return re.findall(r"```python\n(.*?)```", fh.read(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(index, capsys):
    names = {}
    exec(compile(python_blocks()[index], f"README.md block {index}", "exec"), names)
    assert capsys.readouterr().out  # the example prints its results
    if "stderr" in names:  # what it prints is right: the sampled <r1> within 4 standard errors of the exact one
        exact = names["system"].exact_moments()["mean_r1"]
        assert abs(names["mean"] - exact) < 4 * names["stderr"], (names["mean"], names["stderr"], exact)


def test_readme_quick_start_has_the_two_commands():
    with open(README) as fh:
        text = fh.read()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick, flags=re.S)
    assert len(commands) == 2
    assert "python -m pytest" in commands[1]
    ci = open(os.path.join(os.path.dirname(README), ".ci", "run")).read()
    assert commands[1].strip() in ci  # .ci/run calls the README's test command
