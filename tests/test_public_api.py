"""The public surface: curated, sorted, complete, and reporting `mesh` as home."""

from __future__ import annotations
import __future__

import importlib
import inspect

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
        """Every public name defined in mesh/__init__.py is listed in __all__."""
        public = {
            name
            for name, value in vars(mesh).items()
            if not name.startswith("_")
            and not inspect.ismodule(value)
            and not isinstance(value, __future__._Feature)
        }
        assert public | {"__version__"} == set(mesh.__all__)

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
