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


def test_stock_command_reports_our_errors_in_one_line_and_others_unchanged():
    code = (
        "import sys\n"
        "import fairchem.core._cli as cli\n"
        "from fairchem_prune.errors import PruneError\n"
        "def bad(*a, **k):\n    raise PruneError('the data is wrong; fix it')\n"
        "cli.main.__wrapped__.__globals__.update(runner_wrapper=bad, build_config=lambda args, rest: {})\n"
        "sys.argv = ['fairchem', '--mode', 'train', '--config-yml', '/dev/null', '--cpu']\n"
        "cli.main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/tmp")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == "error: the data is wrong; fix it"
    assert "Traceback" not in result.stderr
    other = code.replace("raise PruneError('the data is wrong; fix it')", "raise ValueError('not ours')")
    result = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True, cwd="/tmp")
    assert result.returncode == 1 and "Traceback" in result.stderr and "ValueError: not ours" in result.stderr
