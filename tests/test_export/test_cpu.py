"""export/cpu.py: which CPUs' int8 kernels saturate u8s8 pair sums."""
from mmlapq.export.cpu import int8_pairs_saturate


def test_vnni_flags_decide(tmp_path):
    def cpu(flags):
        path = tmp_path / f'cpuinfo_{len(flags)}'
        path.write_text(f'processor\t: 0\nflags\t\t: {" ".join(flags)}\n')
        return str(path)

    avx2 = ['sse4_2', 'avx', 'avx2']
    assert int8_pairs_saturate(cpu(avx2), 'x86_64')
    assert not int8_pairs_saturate(cpu(avx2 + ['avx512f', 'avx512_vnni']),
                                   'x86_64')
    assert not int8_pairs_saturate(cpu(avx2 + ['avx_vnni']), 'x86_64')
    assert not int8_pairs_saturate(cpu(avx2), 'aarch64')
    assert not int8_pairs_saturate(str(tmp_path / 'none'), 'x86_64')
