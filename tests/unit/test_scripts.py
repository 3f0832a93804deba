"""Every shell script the project ships (demo, deps, VM kernel, kind e2e) is shellcheck-clean."""
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "scripts").glob("*.sh")) + [
    Path(__file__).resolve().parents[2] / ".ci" / "run"]


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck is not installed "
                    "(scripts/install-deps.sh installs it)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script):
    proc = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
