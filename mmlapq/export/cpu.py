"""Whether this CPU runs 8-bit integer kernels exactly.

x86 CPUs without VNNI (AVX2 only: AMD Zen 1-3, Intel before Cascade Lake)
multiply unsigned 8-bit inputs by signed 8-bit weights with ``vpmaddubsw``,
which adds two products into a saturating int16: with an 8-bit input
(codes up to 255) and 8-bit weights (up to 127) a pair can reach 64,770 and
is clipped to 32,767. onnxruntime's and OpenVINO's u8s8 kernels then
compute other numbers than the QDQ graph says, on the layers with 8-bit
weights and 8-bit inputs only (onnxruntime documents it: "reduce_range ...
is designed for the U8S8 format on AVX2 and AVX512 (non-VNNI) machines to
mitigate saturation issues"). With VNNI (``vpdpbusd``, int32 sums), AMX, or
on ARM, nothing saturates. 4-bit layers never do (255 x 7 x 2 < 32,767),
nor 8-bit layers whose weights use 7 bits (255 x 63 x 2 < 32,767):
``quantizer.int16_safe_weights`` (docs/deployment.md).
"""
import functools
import platform

VNNI_FLAGS = ('avx512_vnni', 'avx_vnni', 'amx_int8')


@functools.lru_cache(maxsize=None)
def int8_pairs_saturate(cpuinfo: str = '/proc/cpuinfo',
                        machine: str = '') -> bool:
    """True on an x86 CPU (``machine``, default this one's) whose flags
    (Linux ``cpuinfo``) name no VNNI or AMX instruction."""
    machine = machine or platform.machine()
    if machine.lower() not in ('x86_64', 'amd64', 'i686'):
        return False
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(':', 1)[1].split() for line in f
                          if line.startswith('flags')), None)
    except OSError:
        return False
    return flags is not None and not any(f in flags for f in VNNI_FLAGS)


SATURATION_NOTE = ('this CPU has no VNNI (AVX2 only): onnxruntime and '
                   "OpenVINO's u8s8 kernels saturate int16 pair sums on "
                   'layers with 8-bit weights and 8-bit inputs, so they '
                   'differ from the QDQ graph there, if the model has such '
                   'layers (quantizer.int16_safe_weights=True leaves none) '
                   '(docs/deployment.md, "CPUs without VNNI")')
