"""Fixtures loading the example scripts (examples/ is not a package) as modules, so tests call their `main(argv)`."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def text_classification() -> ModuleType:
    return load_example("train_text_classification")


@pytest.fixture(scope="session")
def token_classification() -> ModuleType:
    return load_example("train_token_classification")


@pytest.fixture(scope="session")
def generate_example() -> ModuleType:
    return load_example("generate")


@pytest.fixture(scope="session")
def distill_encoder() -> ModuleType:
    return load_example("distill_encoder")
