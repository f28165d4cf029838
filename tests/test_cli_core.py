"""The core command line: demo three-atom and the CLI's error handling."""

import json
import subprocess
import sys


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "latentlab.cli", *args], capture_output=True, text=True)


def test_demo_three_atom_json_has_the_documented_keys():
    out = run_cli("demo", "three-atom", "--json", "--walkers", "200", "--production", "0.6", "--burn-in", "0.3")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result["parameters"]) >= {"masses", "k_bond", "r0", "k_cos", "temperature"}
    assert 0.9 < result["kinetic_temperature_ratio"] < 1.1
    for convention in ("consistent", "eq9"):
        stats = result["conventions"][convention]
        for name in ("mean_r1", "var_r1", "mean_r2", "var_cos"):
            assert set(stats[name]) >= {"exact", "sampled", "stderr"}
            assert stats[name]["stderr"] > 0
    assert abs(result["conventions"]["consistent"]["mean_r1"]["exact"] - 0.40538) < 1e-5


def test_demo_table_is_readable():
    out = run_cli("demo", "three-atom", "--walkers", "100", "--production", "0.2", "--burn-in", "0.1")
    assert out.returncode == 0, out.stderr
    assert "consistent" in out.stdout and "eq9" in out.stdout and "stderr" in out.stdout


def test_cli_help_and_bad_arguments():
    assert run_cli("--help").returncode == 0
    out = run_cli("demo", "three-atom", "--walkers", "1")
    assert out.returncode == 2 and "--walkers" in out.stderr and "Traceback" not in out.stderr
