"""Programs that drive the library: the experiments page, the README's numbers, the benchmark
and the GPU check (``scripts/`` holds their thin shells).

The library never imports from here, so what a user imports (model, module, instruments,
theory, data, report) carries none of the programs' weight or their assumptions about the
checkout (they find ``conf/``, ``scripts/`` and ``docs/`` beside ``src/``).
"""
