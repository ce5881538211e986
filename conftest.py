"""Repository-root conftest: puts the repo on sys.path (so ``training`` imports)
and keeps torch to a bounded number of threads on the 2-core CI machine."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
