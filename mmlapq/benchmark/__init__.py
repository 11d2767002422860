"""The benchmarks: LAPQ against other methods on one model (``suite``, with
its ``methods`` and the CI ``gate``), and exported models against the
runtimes' own int8 quantizers (``onnx_runtimes``, timed by ``timing``).
Built on the run's pieces in ``engine/`` and ``export/``; imported by
``tools/benchmark.py`` and ``tools/benchmark_onnx.py`` only."""
