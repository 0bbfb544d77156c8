"""Prompts and generation options load without torch or numpy: the command line and the web UI read them
before (or without) loading a model. Each check runs in a fresh interpreter, where nothing is imported yet."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("module", ["engine.notagen.prompts", "engine.notagen.options", "engine.notagen.header"])
def test_module_imports_without_torch_or_numpy(module):
    check = f"import {module}, sys; heavy = {{'torch', 'numpy'}} & set(sys.modules); assert not heavy, heavy"
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True, timeout=60)
