"""The package's shape: no import cycles between its modules (counting
imports inside functions too), and quant/ and lapq/ free of mmengine."""
import ast
import os.path as osp
from pathlib import Path

import pytest

PKG = Path(osp.dirname(osp.dirname(osp.abspath(__file__)))) / 'mmlapq'


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports(path: Path) -> set:
    """mmlapq modules ``path`` imports (anywhere in the file)."""
    name = module_name(path)
    package = name if path.stem == '__init__' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1] +
                                ([base] if base else []))
            for alias in node.names:
                found.add(f'{base}.{alias.name}')
                found.add(base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def graph() -> dict:
    files = {module_name(p): p for p in PKG.rglob('*.py')}
    # Edges to modules only; a package's __init__ re-exports are not
    # edges of the modules it imports from.
    return {name: {m for m in imports(path) if m in files and m != name
                   and not name.startswith(m + '.')}
            for name, path in files.items() if not path.stem == '__init__'}


def test_no_import_cycles():
    edges = graph()

    def visit(node, stack):
        if node in stack:
            cycle = stack[stack.index(node):] + [node]
            pytest.fail('import cycle: ' + ' -> '.join(cycle))
        for nxt in edges.get(node, ()):
            visit(nxt, stack + [node])
    for start in edges:
        visit(start, [])


@pytest.mark.parametrize('sub', ['quant', 'lapq', 'report', 'export',
                                 'benchmark'])
def test_only_engine_imports_openmmlab(sub):
    for path in (PKG / sub).rglob('*.py'):
        openmmlab = [m for m in imports(path)
                     if m.split('.')[0] in ('mmengine', 'mmcls', 'mmcv',
                                            'mmpretrain')]
        assert not openmmlab, (path, openmmlab)


def test_only_compat_names_a_classification_library():
    """mmcls and mmpretrain are reached through engine/compat.py only, so
    that one codebase runs on either."""
    for path in PKG.rglob('*.py'):
        if path.name == 'compat.py':
            continue
        named = [m for m in imports(path)
                 if m.split('.')[0] in ('mmcls', 'mmpretrain')]
        assert not named, (path, named)
