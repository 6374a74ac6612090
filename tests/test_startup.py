"""Start-up: the CLI's help paths import no heavy dependency, and the packages' lazy exports resolve."""

import importlib
import os
import subprocess
import sys

import pytest

# imported where they are used (training, evaluating, exporting), never to print help
HEAVY = ("diffusers", "huggingface_hub", "sklearn", "tensorboard", "torch_fidelity", "torchmetrics", "transformers")
PROBE = """
import sys
import torch, lightning.pytorch.cli
before = set(sys.modules)
from realuid_lightning.cli import main
for argv in (["--help"], ["sample", "--help"], ["evaluate", "--help"], ["export", "--help"]):
    try:
        main(argv)
    except SystemExit:
        pass
print(" ".join(sorted(set(sys.modules) - before)))
"""
LAZY_PACKAGES = [
    "realuid_lightning",
    "realuid_lightning.callbacks",
    "realuid_lightning.data",
    "realuid_lightning.evaluation",
    "realuid_lightning.modules",
    "realuid_lightning.nets",
]


def test_help_imports_no_heavy_dependency():
    """In a fresh interpreter, `realuid [sample|evaluate|export] --help` loads no module of diffusers, tensorboard,
    torchmetrics, torch_fidelity (beyond those `import lightning` loads itself) or the other heavy packages."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = r.stdout.strip().splitlines()[-1].split()
    assert "realuid_lightning.cli" in loaded
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_exports_resolve(package):
    """Every name of a package's __all__ is the object its defining module holds, listed by dir(); others raise."""
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        home = importlib.import_module(getattr(value, "__module__", package))  # a constant (TOY_DATASETS) has none
        assert getattr(home, name) is value, name
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no attribute 'Missing'"):
        module.Missing
