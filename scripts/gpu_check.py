"""The device check (issue 18): sweep, instruments, determinism, throughput and packing on
one CUDA GPU, in under 8 minutes; writes <out>/gpu_check.json and <out>/gpu_check.md.

    python scripts/gpu_check.py --out outputs/gpu_check           # the full check
    python scripts/gpu_check.py --out outputs/gpu_check --quick   # tiny sizes, a dry run

Without CUDA it prints "skipped: no CUDA" (and writes it in the JSON) and exits 0.

Before the run, one quick pre-check of what the machine's Python has:

    python -c "import importlib.util as u, torch; print(torch.__version__, torch.version.cuda,
    torch.cuda.is_available(), {m: u.find_spec(m) is not None for m in ('lightning', 'hydra',
    'omegaconf', 'tensorboard', 'matplotlib', 'scipy', 'ray', 'hydra_plugins')})"

A machine without network lacks what it does not have: bring wheels (64 MiB in all; torch is
assumed there, a CUDA build). On a machine with network, pinned as in requirements.lock:

    pip download --no-deps -d wheels hydra-core==1.3.8 omegaconf==2.3.1 \
        antlr4-python3-runtime==4.9.3 lightning==2.6.6 lightning-utilities==0.15.3 \
        torchmetrics==1.9.0 tensorboard==2.21.0 tensorboard-data-server==0.7.2 \
        absl-py==2.5.1 Markdown==3.11.3 Werkzeug==3.1.9 fsspec==2026.9.0 PyYAML==6.0.4
    du -sh wheels    # keep it under 64 MiB; drop what the pre-check found installed

(numpy, protobuf, grpcio, matplotlib and scipy are large: bring them only when missing;
Ray is optional, its wheel alone is larger than the allowance, so item 5 then stacks.)
Then on the GPU machine, from the repository root:

    pip install --no-index --find-links wheels --no-deps wheels/*.whl
    PYTHONPATH=$PWD/src timeout 540 python scripts/gpu_check.py --out $OUT/gpu_check

The check's budget is 450 s (``--budget``), so a 540 s limit leaves room for one rerun in
a 15-minute lease.
"""

from fcn_research.gpu_check import main

if __name__ == "__main__":
    main()
