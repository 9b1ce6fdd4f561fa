"""utils/dip/allocator.py: run_BDN.py and denoise.py start again with tcmalloc preloaded where
it is installed (docs/PERFORMANCE.md, "Memory: preload tcmalloc")."""

from __future__ import annotations

import ast
import ctypes.util
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from utils.dip import allocator

ARGV = ["python3", "-u", "run_BDN.py", "--num_iter", "10"]


def test_the_restart_keeps_the_interpreter_options_the_script_and_its_flags():
    command = allocator.restart_command({"PATH": "/bin"}, "linux", "libtc.so.4", ARGV)
    assert command == [sys.executable, "-u", "run_BDN.py", "--num_iter", "10"]


@pytest.mark.parametrize(
    ("environment", "platform", "library"),
    [
        ({"LD_PRELOAD": "/lib/other.so"}, "linux", "libtc.so.4"),  # the user's choice
        ({"LD_PRELOAD": ""}, "linux", "libtc.so.4"),  # set empty: glibc's malloc, by choice
        ({}, "linux", None),  # not installed
        ({}, "darwin", "libtc.so.4"),
    ],
)
def test_no_restart_where_preload_is_set_or_impossible(environment, platform, library):
    assert allocator.restart_command(environment, platform, library, ARGV) is None


@pytest.mark.skipif(
    sys.platform != "linux" or ctypes.util.find_library(allocator.LIBRARY) is None,
    reason="tcmalloc is not installed (Debian: apt-get install libtcmalloc-minimal4)",
)
def test_a_process_without_ld_preload_continues_with_tcmalloc_loaded():
    """The restarted process (same PID) has tcmalloc mapped and runs the rest of its code once."""
    code = (
        "import os; from utils.dip import allocator; print('start', os.getpid(), flush=True);"
        "allocator.preload_tcmalloc(); maps = open('/proc/self/maps').read();"
        "print('tcmalloc' in maps, os.getpid())"
    )
    environment = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )
    first, second, third = done.stdout.split("\n")[:3]  # the first start printed before exec
    pid = first.split()[1]
    assert second == f"start {pid}" and third == f"True {pid}"


@pytest.mark.parametrize("script", ["run_BDN.py", "denoise.py"])
def test_the_dip_commands_restart_before_anything_else(script):
    """The first statement of the script's `__main__` block is the restart (before logging and
    the flags, so that nothing is said or done twice)."""
    tree = ast.parse((ROOT / script).read_text())
    main_block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
    )
    assert ast.unparse(main_block.body[0]) == "allocator.preload_tcmalloc()"
