"""The installed package (pyproject.toml) is complete: every module the shipped ones import or
register as a gymnasium entry point, and every one the README runs, is in py-modules; every
third-party import is a dependency or an extra; the console script is the command line."""

import ast
import importlib
import re
import sys
import tomllib
from pathlib import Path

import pytest

import policy_annealing as pa

HERE = Path(__file__).parent
PROJECT = tomllib.loads((HERE / "pyproject.toml").read_text())
SHIPPED = PROJECT["tool"]["setuptools"]["py-modules"]
LOCAL = {path.stem for path in HERE.glob("*.py")}  # the repo's top-level modules


def imports_of(module: str) -> set[str]:
    """Top-level names a module imports (at its top or inside a function), and the modules of
    its gym.register entry points ("tree_env:TreeEnv")."""
    names = set()
    for node in ast.walk(ast.parse((HERE / f"{module}.py").read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.keyword) and node.arg == "entry_point":
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                names.add(node.value.value.split(":")[0].split(".")[0])
    return names


def test_every_module_the_code_and_the_readme_use_is_shipped():
    assert all((HERE / f"{module}.py").is_file() for module in SHIPPED)
    used = set().union(*(imports_of(module) for module in SHIPPED)) & LOCAL
    assert used <= set(SHIPPED), f"add {sorted(used - set(SHIPPED))} to py-modules"
    readme = set(re.findall(r"\b(\w+)\.py\b", (HERE / "README.md").read_text())) & LOCAL
    readme = {name for name in readme if not name.startswith("test")}  # tests are not shipped
    assert readme <= set(SHIPPED), f"add {sorted(readme - set(SHIPPED))} to py-modules"


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0].lower()


def test_every_third_party_import_is_a_dependency_or_an_extra():
    declared = {requirement_name(r) for r in PROJECT["project"]["dependencies"]}
    for requirements in PROJECT["project"]["optional-dependencies"].values():
        declared |= {requirement_name(r) for r in requirements}
    used = set().union(*(imports_of(module) for module in SHIPPED))
    third_party = used - LOCAL - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party <= declared, f"declare {sorted(third_party - declared)} in pyproject.toml"
    assert {"scipy", "matplotlib"} <= {
        requirement_name(r) for r in PROJECT["project"]["optional-dependencies"]["report"]
    }


def test_the_console_script_is_the_command_line(capsys):
    module, function = PROJECT["project"]["scripts"]["policy-annealing"].split(":")
    main = getattr(importlib.import_module(module), function)
    assert main is pa.main
    assert main(["--env", "NoSuchEnv-v0"]) == 2  # an exit status, as the script's sys.exit takes
    assert "unknown env" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "Policy Annealing" in capsys.readouterr().out
