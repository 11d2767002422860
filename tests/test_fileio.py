"""atomic_write: the target appears whole or not at all."""
import os

import pytest

from mmlapq.fileio import atomic_write, write_text


def test_writes_through_a_temporary_name_with_the_extension(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        open(tmp, 'w').write('new')
    atomic_write(str(tmp_path / 'a.json'), write)
    assert seen == [str(tmp_path / 'a.partial.json')]
    assert (tmp_path / 'a.json').read_text() == 'new'
    assert os.listdir(tmp_path) == ['a.json']


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / 'report.md'
    write_text(str(target), 'old')

    def fail(tmp):
        open(tmp, 'w').write('half')
        raise RuntimeError('disk full')
    with pytest.raises(RuntimeError, match='disk full'):
        atomic_write(str(target), fail)
    assert target.read_text() == 'old'
    assert os.listdir(tmp_path) == ['report.md']
