"""tools/quantize.py run in this process (faster than a subprocess: the
imports are paid once), as the zoo and library tests run it."""
import importlib.util
import os.path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def tool_module(name: str):
    """The module of tools/<name>.py; call its ``main(argv)``."""
    spec = importlib.util.spec_from_file_location(
        f'{name}_tool', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quantize_tool():
    """The module of tools/quantize.py; call its ``main(argv)``."""
    return tool_module('quantize')


def printed_top1(text: str) -> float:
    """top-1 of the metrics dict ``--eval-quantized`` printed."""
    line = [ln for ln in text.splitlines() if ln.startswith('quantized model')]
    return eval(line[0].split(':', 1)[1])['accuracy/top1']
