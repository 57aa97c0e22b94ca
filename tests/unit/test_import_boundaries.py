"""Who may import whom, read from the source (every import statement, also those inside
functions, and import_module/__import__ with a literal name):

- ``shared`` imports no ``services`` module: it is what the services have in common;
- each service package (controller, worker, device_sim, ca_sim) imports only itself and
  ``shared``; in particular the device simulator and the CA simulator only talk over the
  network, as a device and its CA do;
- ``services.cli`` and ``services.stack`` wire the services together and may import any.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("controller", "worker", "device_sim", "ca_sim")
_DYNAMIC = {"import_module", "__import__"}


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """The dotted name of a source file under ``root``, and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if package else parts), package


def imports_of(source: str, module: str, *, package: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) for each import in ``source``, relative ones resolved against
    ``module``; ``from a import b`` counts as importing ``a.b``, which is ``a`` or lies in it."""
    found: list[tuple[int, str]] = []
    here = module.split(".") if package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            prefix = ".".join([*base, *([node.module] if node.module else [])])
            found += [(node.lineno, prefix if alias.name == "*" else f"{prefix}.{alias.name}".lstrip("."))
                      for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "id", getattr(node.func, "attr", None)) in _DYNAMIC):
            found.append((node.lineno, node.args[0].value))
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def refusal(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``; None when it may."""
    if not _within(imported, "services"):
        return None
    if _within(importer, "shared"):
        return "shared code must not depend on a service"
    for service in SERVICES:
        if not _within(importer, f"services.{service}") or _within(imported, f"services.{service}"):
            continue
        sims = {"device_sim", "ca_sim"}
        if service in sims and any(_within(imported, f"services.{other}") for other in sims - {service}):
            return "the device simulator and the CA simulator talk over the network only"
        return f"services.{service} is a service: it imports only its own package and shared"
    return None


def violations(paths: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in paths:
        module, package = module_name(path, root)
        for line, imported in imports_of(path.read_text(encoding="utf-8"), module, package=package):
            reason = refusal(module, imported)
            if reason:
                found.append(f"{path.relative_to(root)}:{line}: {module} imports {imported} ({reason})")
    return found


def test_services_and_shared_keep_to_their_boundaries():
    paths = sorted(p for top in ("shared", "services") for p in (ROOT / top).rglob("*.py"))
    assert len(paths) > 50  # the walk found the source tree
    problems = violations(paths)
    assert not problems, "imports across a boundary:\n" + "\n".join(problems)


# --- the checker itself ------------------------------------------------------------------------

@pytest.mark.parametrize(("module", "source", "imported"), [
    ("services.worker.runner", "import os\nfrom shared import db", ["os", "shared.db"]),
    ("services.device_sim.ca_client.issued", "from . import trust\nfrom .network import CaFailure",
     ["services.device_sim.ca_client.trust", "services.device_sim.ca_client.network.CaFailure"]),
    ("services.device_sim.ca_client.issued", "from .. import keypairs", ["services.device_sim.keypairs"]),
    ("services.ca_sim", "from .profiles import DEFAULT", ["services.ca_sim.profiles.DEFAULT"]),
    ("services.ca_sim.cli", "def run():\n    from services.stack import embedded\n",
     ["services.stack.embedded"]),
    ("services.worker.cli", "importlib.import_module('services.controller.app')", ["services.controller.app"]),
])
def test_every_kind_of_import_is_read(module, source, imported):
    package = module == "services.ca_sim"
    assert [name for _, name in imports_of(source, module, package=package)] == imported


@pytest.mark.parametrize(("importer", "imported", "allowed"), [
    ("services.device_sim.ca_client.issued", "services.ca_sim.profiles", False),
    ("services.ca_sim.est_server", "services.device_sim.ca_client.issued", False),
    ("services.device_sim.server", "services.stack.http_thread", False),
    ("services.worker.runner", "services.controller.queueing.jobs", False),
    ("services.controller.app", "services", False),
    ("shared.models", "services.controller.app", False),
    ("shared.models", "shared.enums", True),
    ("services.device_sim.ca_client.issued", "services.device_sim.tasks", True),
    ("services.device_sim.ca_client.issued", "shared.protocols.csr", True),
    ("services.ca_sim_extra.x", "services.ca_sim.profiles", True),  # not the ca_sim package
    ("services.stack.embedded", "services.worker.actors", True),
    ("services.cli.demo", "services.stack.embedded", True),
])
def test_the_rules(importer, imported, allowed):
    assert (refusal(importer, imported) is None) is allowed


def test_a_violation_names_the_file_line_module_and_import(tmp_path):
    bad = tmp_path / "services" / "device_sim" / "leak.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("import json\n\n\ndef profile():\n    from services.ca_sim.profiles import DEFAULT\n")
    assert violations([bad], root=tmp_path) == [
        "services/device_sim/leak.py:5: services.device_sim.leak imports services.ca_sim.profiles.DEFAULT "
        "(the device simulator and the CA simulator talk over the network only)"
    ]
