"""Run the ``lifelong`` CLI in a child process that SIGKILLs itself right after the N-th
task-boundary checkpoint: a real, unannounced kill at a known point of a run or sweep."""

import signal
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import simulator.runner as runner
    original, saves = runner.save_checkpoint, [0]
    def save_then_maybe_die(*args):
        original(*args)
        saves[0] += 1
        if saves[0] == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)
    runner.save_checkpoint = save_then_maybe_die
    from simulator.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def kill_after_checkpoint(n: int, argv: list[str], tmp_path) -> subprocess.CompletedProcess:
    """Run ``lifelong *argv`` and kill it after checkpoint ``n``; asserts it was killed."""
    script = tmp_path / "kill_switch_child.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(n), *argv], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc
