"""The package layout is a contract: the model folder is self-contained remote code, each other folder imports only
what its role allows (README "Code layout"), and the flat layout's import paths still work, with a warning."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import hf_gru
from hf_gru._moved import MOVED_MODULES

PACKAGE = Path(hf_gru.__file__).parent
MODEL_FOLDER = PACKAGE / "models" / "hybrid_gru"
# What remote code may import besides its siblings: what a checkpoint's loader is sure to have (transformers and the
# libraries transformers itself requires).
REMOTE_CODE_LIBRARIES = {"torch", "transformers", "huggingface_hub", "safetensors"}
# hf_gru folders each folder may import (besides itself); README "Code layout" states the same.
ALLOWED = {
    "models": set(),
    "training": set(),
    "metrics": set(),
    "tasks": {"models", "training"},
    "pretrained": {"models", "training"},
    "deploy": {"models"},
}


def imports(path: Path) -> list[tuple[int, str, int]]:
    """(line, absolute module name, relative level) of every import in the file, function-level ones included;
    relative imports are resolved against the file's package."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module, 0))
                continue
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            if node.module:
                found.append((node.lineno, ".".join([*base, node.module]), node.level))
            else:  # `from . import x`: each name is a module of that package
                found += [(node.lineno, ".".join([*base, alias.name]), node.level) for alias in node.names]
    return found


@pytest.mark.parametrize("path", sorted(MODEL_FOLDER.glob("*.py")), ids=lambda p: p.name)
def test_model_folder_imports_only_its_siblings_torch_transformers_and_the_standard_library(path):
    siblings = {f"hf_gru.models.hybrid_gru.{p.stem}" for p in MODEL_FOLDER.glob("*.py")} | {"hf_gru.models.hybrid_gru"}
    for line, module, level in imports(path):
        where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {module!r}"
        if level:
            assert level == 1 and module in siblings, f"{where}: remote code may import only its siblings (one dot)"
        else:
            root = module.split(".")[0]
            assert root in REMOTE_CODE_LIBRARIES or root in sys.stdlib_module_names, (
                f"{where}: a checkpoint's remote code may import only {sorted(REMOTE_CODE_LIBRARIES)} and the "
                "standard library"
            )


def test_save_pretrained_copies_exactly_the_model_folder(tmp_path):
    from tests.helpers import tiny_config

    hf_gru.HybridGRUForCausalLM(tiny_config()).save_pretrained(tmp_path)
    saved = {p.name for p in tmp_path.glob("*.py")}
    assert saved == {p.name for p in MODEL_FOLDER.glob("*.py")} - {"__init__.py"}


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_each_folder_imports_only_what_its_role_allows(folder):
    files = sorted((PACKAGE / folder).rglob("*.py"))
    assert files, f"hf_gru/{folder} is empty"
    for path in files:
        for line, module, _ in imports(path):
            parts = module.split(".")
            if parts[0] != "hf_gru":
                continue
            target = parts[1] if len(parts) > 1 else "hf_gru"
            assert target == folder or target in ALLOWED[folder], (
                f"{path.relative_to(PACKAGE.parent)}:{line} imports {module!r}: hf_gru/{folder} may import only "
                f"{sorted(ALLOWED[folder] | {folder})}"
            )


def test_no_module_outside_the_folders_but_the_package_entry_points():
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == {"__init__.py", "_moved.py"}, f"modules at the top of hf_gru/: {sorted(top)}"


MOVED_PATHS_PROBE = r"""
import importlib, json, sys, warnings
import hf_gru
from hf_gru._moved import MOVED_MODULES
report = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from hf_gru import text  # the package attribute, before anything imported hf_gru.text
report["from hf_gru import text"] = {"same_module": text is sys.modules["hf_gru.tasks.text"],
                                     "warned": any("hf_gru.tasks.text" in str(w.message) for w in caught)}
for old, new in MOVED_MODULES.items():
    sys.modules.pop(old, None)  # so that each old path is imported afresh
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    report[old] = {
        "same_module": module is sys.modules[new] and module.__name__ == new and module.__spec__.name == new,
        "warned": any(old in m and new in m for m in messages),
    }
import hf_gru.export
from hf_gru.deploy.onnx_graphs import export_onnx
from hf_gru.deploy.steps import state_specs
report["hf_gru.export names"] = {"same_module": hf_gru.export.export_onnx is export_onnx
                                 and hf_gru.export.state_specs is state_specs, "warned": True}
print(json.dumps(report))
"""


def test_old_import_paths_resolve_to_the_moved_modules_with_a_warning_naming_the_new_path():
    # A fresh process: in this one, earlier tests may have imported the modules already.
    result = subprocess.run([sys.executable, "-c", MOVED_PATHS_PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(MOVED_MODULES) <= set(report)
    bad = {name: checks for name, checks in report.items() if not all(checks.values())}
    assert not bad, bad


def test_moved_module_map_points_at_modules_that_exist():
    for old, new in MOVED_MODULES.items():
        relative = Path(*new.split(".")[1:])
        assert (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file(), (
            f"{old} -> {new}: no such module"
        )
        assert not (PACKAGE / Path(*old.split(".")[1:])).with_suffix(".py").exists(), f"{old} still exists"
