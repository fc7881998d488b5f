"""The device check: sweep, instruments, determinism, throughput and packing on
one CUDA GPU, in under 8 minutes; writes <out>/gpu_check.json and <out>/gpu_check.md.

    python scripts/gpu_check.py --out outputs/gpu_check           # the full check
    python scripts/gpu_check.py --out outputs/gpu_check --quick   # tiny sizes, a dry run

Without CUDA it prints "skipped: no CUDA" (and writes it in the JSON) and exits 0.

Before the run, one quick pre-check of what the machine's Python has (needs torch only):

    PYTHONPATH=$PWD/src python scripts/gpu_check.py --precheck

It prints Python's and torch's versions, torch's CUDA, the GPU it sees and the modules the
check needs that are missing. A machine without network gets them as wheels (64 MiB in all;
torch itself, a CUDA build, must be there). Download them where there is network, Linux
x86_64, pinned as in requirements.lock, only the missing ones (--no-deps: the list is the
closure; for another Python than the downloader's add --python-version X.Y
--only-binary=:all:):

    pip download --no-deps -d wheels \
        lightning==2.6.6 lightning-utilities==0.15.3 torchmetrics==1.9.0 tqdm==4.70.1 \
        hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 PyYAML==6.0.4 \
        tensorboard==2.21.0 tensorboard-data-server==0.7.2 absl-py==2.5.1 Markdown==3.11.3 \
        Werkzeug==3.1.9 MarkupSafe==3.0.4 protobuf==7.36.2 grpcio==1.85.3 fsspec==2026.9.0 \
        scikit-learn==1.9.1 joblib==1.6.0 threadpoolctl==3.8.0
    du -sh wheels    # about 45 MiB with all of the above

The data (moons, digits) come from scikit-learn, which needs scipy and numpy: these two are
large (about 35 and 17 MiB), so if they are missing too, leave out what the pre-check found
installed to stay under 64 MiB. Ray (over 64 MiB alone) is optional: without it item 5 trains
the same jobs as one stack and says so. On the GPU machine, from the repository root:

    pip install --no-index --no-deps wheels/*.whl
    PYTHONPATH=$PWD/src timeout 540 python scripts/gpu_check.py --out $OUT/gpu_check

The check's budget is 450 s (``--budget``), so a 540 s limit leaves room for one rerun in a
15-minute lease; it records each item as it finishes, so a cut run still leaves its figures.
"""

from fcn_research.programs.gpu_check import main

if __name__ == "__main__":
    main()
