"""The public surface: curated, sorted, complete, and reporting `mesh` as home."""

from __future__ import annotations
import __future__

import importlib
import inspect
import subprocess
import sys

import pytest

import mesh

PUBLIC_MODULES = ["mesh", "mesh.commands", "mesh.testing", "mesh.typing"]


class TestPublicApi:
    def test_all_is_sorted(self) -> None:
        """`mesh.__all__` is sorted (constants, classes, then functions, each A-Z)."""
        assert sorted(mesh.__all__, key=lambda n: (not n.isupper(), n[0].islower(), n)) == list(
            mesh.__all__
        )

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

    def test_version_is_exposed(self) -> None:
        """`mesh.__version__` is a non-empty string."""
        assert isinstance(mesh.__version__, str)
        assert mesh.__version__
