"""The public surface: curated, sorted, complete, and reporting `mesh` as home."""

from __future__ import annotations
import __future__

import importlib
import inspect
import pydoc
import re
import subprocess
import sys

import pytest

import mesh
import mesh.batch

PUBLIC_MODULES = [
    "mesh",
    "mesh.answers",
    "mesh.batch",
    "mesh.commands",
    "mesh.testing",
    "mesh.typing",
]
# The index at the top of `help(mesh)`: its groups, in order, engine first.
INDEX_GROUPS = [
    "Running a plan",
    "Roles and adapters",
    "Requests and answers",
    "Records",
    "Ledger and reports",
    "Planning helpers",
    "Repository, workspaces and git",
    "Errors",
    "Submodules",
]


def _house_order(name: str) -> tuple[bool, bool, str]:
    """Constants, classes, then functions, each A-Z."""
    return (not name.isupper(), name[0].islower(), name)


class TestPublicApi:
    def test_all_is_sorted(self) -> None:
        """`mesh.__all__` is sorted (constants, classes, then functions, each A-Z)."""
        assert sorted(mesh.__all__, key=_house_order) == list(mesh.__all__)

    def test_all_is_complete(self) -> None:
        """Every name mesh loads on demand is listed in __all__, and nothing else is public."""
        assert set(mesh._HOMES) | {"__version__"} == set(mesh.__all__)
        assert set(mesh.__all__) <= set(dir(mesh))
        defined = {
            name
            for name, value in vars(mesh).items()
            if not name.startswith("_")
            and not inspect.ismodule(value)
            and not isinstance(value, __future__._Feature)
        }
        assert defined - {"TYPE_CHECKING"} <= set(mesh.__all__)

    def test_unknown_names_are_attribute_errors(self) -> None:
        """A misspelt name is an AttributeError naming it, as for any module."""
        with pytest.raises(AttributeError, match="'Orchestrater'"):
            _ = mesh.Orchestrater  # type: ignore[attr-defined]

    @pytest.mark.timeout(300)  # an interpreter per public class: ~30 s alone, more when busy
    def test_type_hints_of_each_class_reached_first(self) -> None:
        """`typing.get_type_hints` works on every public class, whichever is reached first."""
        classes = [n for n in mesh.__all__ if inspect.isclass(getattr(mesh, n))]
        probe = (
            "import sys, typing, mesh\n"
            "for name in sys.argv[1:]:\n"
            "    typing.get_type_hints(getattr(mesh, name))\n"
        )
        for name in classes:  # each in a fresh interpreter, reached before any other
            subprocess.run([sys.executable, "-c", probe, name, *classes], check=True)

    def test_user_subclasses_of_records(self) -> None:
        """A user's attrs subclass of a mesh record resolves its types and structures."""
        probe = (
            "import attrs, cattrs, typing, mesh\n"
            "@attrs.frozen\n"
            "class MyUnit(mesh.Unit):\n"
            "    note: str = ''\n"
            "attrs.resolve_types(MyUnit)\n"
            "typing.get_type_hints(MyUnit)\n"
            "print(cattrs.structure({'id': 'a', 'objective': 'b'}, MyUnit).risk_tier)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        )
        assert done.stdout.strip() == "med"

    def test_import_mesh_loads_no_dependency(self) -> None:
        """`import mesh` is cheap: the engine's dependencies load on first use of a name."""
        heavy = ["anyio", "attrs", "cattrs", "structlog", "transitions", "wcmatch", "rich"]
        probe = (
            f"import sys, mesh; print(sorted(name for name in {heavy!r} if name in sys.modules))"
        )
        shown = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout
        assert shown.strip() == "[]"

    @pytest.mark.parametrize("module_name", PUBLIC_MODULES)
    def test_public_modules_declare_all(self, module_name: str) -> None:
        """Each public module declares __all__ and every listed name exists."""
        module = importlib.import_module(module_name)
        assert hasattr(module, "__all__")
        for name in module.__all__:
            assert hasattr(module, name), name

    def test_reexports_report_mesh_as_module(self) -> None:
        """Classes and functions re-exported from private modules say `mesh`."""
        for name in mesh.__all__:
            obj = getattr(mesh, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert obj.__module__ == "mesh", name

    def test_errors_share_one_root_and_carry_a_code(self) -> None:
        """Every exported exception derives from MeshError and has a failure code."""
        errors = [
            getattr(mesh, name)
            for name in mesh.__all__
            if inspect.isclass(getattr(mesh, name))
            and issubclass(getattr(mesh, name), BaseException)
        ]
        assert len(errors) >= 9
        for error in errors:
            assert issubclass(error, mesh.MeshError)
            assert isinstance(error.default_code, mesh.FailureCode)

    def test_help_begins_with_the_index(self) -> None:
        """`help(mesh)` opens on an index of every public name, grouped by purpose."""
        page = pydoc.plain(pydoc.render_doc(mesh)).splitlines()
        index = page[: page.index("PACKAGE CONTENTS")]
        assert (
            "    mesh - An embeddable, plan-driven orchestration engine for coding agents." in index
        )
        headings = [line.strip() for line in index if line.strip() in INDEX_GROUPS]
        assert headings == INDEX_GROUPS
        assert len(index) <= 120  # two screens: an index, not a reference
        indexed = set(re.findall(r"(?<!`)`(\w+)`(?!`)", mesh.__doc__ or ""))
        assert set(mesh.__all__) - {"__version__"} == indexed
        submodules = {f"mesh.{name}" for name in re.findall(r"``mesh\.(\w+)``", mesh.__doc__ or "")}
        assert set(PUBLIC_MODULES) - {"mesh"} <= submodules

    def test_version_is_exposed(self) -> None:
        """`mesh.__version__` is a non-empty string."""
        assert isinstance(mesh.__version__, str)
        assert mesh.__version__


class TestBatchModule:
    def test_all_is_sorted_and_complete(self) -> None:
        """`mesh.batch.__all__` is in house order and lists every public name it defines."""
        assert sorted(mesh.batch.__all__, key=_house_order) == list(mesh.batch.__all__)
        defined = {
            name
            for name, value in vars(mesh.batch).items()
            if not name.startswith("_")
            and not inspect.ismodule(value)
            and not isinstance(value, __future__._Feature)
        }
        assert defined == set(mesh.batch.__all__)

    def test_batch_names_left_the_top_level(self) -> None:
        """The CSV helpers live in `mesh.batch` alone: `mesh` neither lists nor loads them."""
        assert set(mesh.batch.__all__).isdisjoint({*mesh.__all__, *mesh._HOMES})
        for name in mesh.batch.__all__:
            assert not hasattr(mesh, name), name

    def test_objects_report_mesh_batch_as_module(self) -> None:
        """Its classes and functions say `mesh.batch`, as `mesh`'s own say `mesh`."""
        for name in mesh.batch.__all__:
            value = getattr(mesh.batch, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert (name, "mesh.batch") == (name, value.__module__)

    @pytest.mark.parametrize("module_name", ["mesh", "mesh.batch", "mesh.typing"])
    def test_no_private_module_shows(self, module_name: str) -> None:
        """What these modules export reports a public module, never a private one."""
        module = importlib.import_module(module_name)
        homes = {
            name: value.__module__
            for name in module.__all__
            if inspect.isclass(value := getattr(module, name)) or inspect.isfunction(value)
        }
        assert {name: home for name, home in homes.items() if "._" in home} == {}

    def test_records_and_errors_keep_working_once_rehomed(self) -> None:
        """Type hints resolve, errors pickle, and `repr` names the public module."""
        probe = (
            "import pickle, typing, mesh.batch\n"
            "typing.get_type_hints(mesh.batch.PreparedBatch)\n"
            "error = pickle.loads(pickle.dumps(mesh.batch.CsvContractError('bad row')))\n"
            "print(type(error).__module__, repr(mesh.batch.FloorResult.PASS))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        )
        assert done.stdout.strip() == "mesh.batch <FloorResult.PASS: 'pass'>"
