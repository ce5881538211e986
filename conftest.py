"""Repository-root conftest: puts the repo on sys.path (so ``training`` imports)
and keeps torch to a bounded number of threads on the 2-core CI machine."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest  # noqa: E402


@pytest.fixture()
def one_thread():
    """torch at one intra-op thread for the test, restored after. For results that are only
    reproducible single-threaded (bit-identical resume) and for spconv 2.3.8's CPU SubMConv3d,
    which returns wrong rows, different each run, with two or more threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
