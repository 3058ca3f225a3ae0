import pytest

from quantkit.core.atomic import atomic_dir
from quantkit.core.errors import InputError


def test_complete_folder_appears_only_at_the_end(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as staging:
        (staging / "a.txt").write_text("x")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_nothing(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as staging:
            (staging / "a.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old").write_text("old")
    with pytest.raises(InputError, match="`overwrite=True`"):  # the CLI says --overwrite
        with atomic_dir(final):
            pass
    with atomic_dir(final, overwrite=True) as staging:
        (staging / "new").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new"]


def test_stale_partial_from_a_killed_run_is_cleaned(tmp_path):
    stale = tmp_path / ".out.partial-abc"
    stale.mkdir()
    with atomic_dir(tmp_path / "out"):
        pass
    assert not stale.exists()


def test_helper_process_dies_with_its_parent_even_by_sigkill(tmp_path):
    """A child started with die_with_parent is killed by the kernel when its parent is SIGKILLed
    (which no Python cleanup can handle): no converter or verifier is orphaned."""
    import signal
    import subprocess
    import sys

    import psutil

    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import subprocess, sys, time\n"
                "from quantkit.core.atomic import die_with_parent\n"
                "child = subprocess.Popen(['sleep', '300'], preexec_fn=die_with_parent)\n"
                "print(child.pid, flush=True)\n"
                "time.sleep(300)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = psutil.Process(int(parent.stdout.readline()))
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    _, alive = psutil.wait_procs([child], timeout=10)
    for process in alive:
        process.kill()
    assert not alive
