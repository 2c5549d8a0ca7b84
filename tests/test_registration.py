"""The stock fairchem registry resolves the plugin's short names in a fresh interpreter."""

import subprocess
import sys


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    return result.stdout.strip()


def test_interpreter_start_up_does_not_import_torch():
    assert run_python("import sys; print('torch' in sys.modules, 'fairchem_prune._autoregister' in sys.modules)") == "False True"


def test_stock_registry_resolves_short_names_without_imports():
    code = (
        "from fairchem.core.common.registry import registry\n"
        "print(registry.get_model_class('gemnet_oc_reduced').__qualname__,"
        " registry.get_model_class('gemnet_oc_reduced_backbone').__qualname__)"
    )
    assert run_python(code) == "GemNetOCReduced GemNetOCReducedBackbone"


def test_unknown_names_still_fail_as_in_fairchem():
    code = (
        "from fairchem.core.common.registry import registry\n"
        "try:\n    registry.get_model_class('no_such_model')\nexcept RuntimeError as e:\n    print('RuntimeError')"
    )
    assert run_python(code) == "RuntimeError"
