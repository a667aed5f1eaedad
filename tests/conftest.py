"""Shared fixtures for the library tests.

- `minbert`, `tokenizer`: the offline default checkpoint (all-MiniLM-L6-v2), loaded once per
  session. `minbert` is in eval mode; a test that needs train mode or changes weights must
  load its own copy (`BertModel.from_pretrained()`, about a second) instead of mutating it.
- `hf_bert`, `hf_tokenizer`: transformers' BertModel and tokenizer from the same directory,
  the references for the parity tests (transformers is pinned in requirements.txt).
- `data_dir`: the CS 224N task files. With MINBERT_DATA_DIR set (as in CI) a broken
  directory FAILS the tests that use it; without it, they are skipped with the reason,
  unless the user cache already holds the files.
- `no_network`: makes any attempt to reach the network in a test raise at once.
- every test: the runner's per-seed matmul-rate measurement (two seconds of matrix products,
  `bench_roofline.matmul_gflops`) returns a constant, so toy rows train in milliseconds;
  tests/test_bench.py measures it for real.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _instant_matmul_rate(monkeypatch, request):
    if request.node.path.name != "test_bench.py":
        from minbert_lib import bench_roofline

        monkeypatch.setattr(bench_roofline, "matmul_gflops", lambda *args, **kwargs: 100.0)


@pytest.fixture(scope="session")
def minbert():
    from minbert_lib.model import BertModel

    return BertModel.from_pretrained().eval()


@pytest.fixture(scope="session")
def checkpoint_dir(minbert) -> Path:
    return Path(minbert.checkpoint_dir)


@pytest.fixture(scope="session")
def tokenizer():
    from minbert_lib.tokenizer import Tokenizer

    return Tokenizer.from_pretrained()


def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@pytest.fixture(scope="session")
def hf_bert(checkpoint_dir):
    from transformers import BertModel as HFBertModel

    _quiet_transformers()
    return HFBertModel.from_pretrained(str(checkpoint_dir)).eval()


@pytest.fixture(scope="session")
def hf_tokenizer(checkpoint_dir):
    from transformers import AutoTokenizer

    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    assert tok.is_fast, "expected the Rust-backed (fast) BERT tokenizer as the reference"
    return tok


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from minbert_lib.data import DataError
    from minbert_lib.data import data_dir as resolve

    if os.environ.get("MINBERT_DATA_DIR"):
        return resolve(download=False)  # set but broken: let the DataError fail the test
    try:
        return resolve(download=False)
    except DataError:
        pytest.skip("no CS 224N task files: MINBERT_DATA_DIR is unset and the cache is empty "
                    "(CI sets MINBERT_DATA_DIR=../shared/data/cs224n)")


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection attempt raises, so a test can never download by accident."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
