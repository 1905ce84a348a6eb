"""Tests run offline, on the bundled fixtures, with every cache and MLflow store in a temporary folder."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # transformers' own bars too (read when it is imported)
os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
os.environ["DATASETS_VERBOSITY"] = "critical"
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def isolated_caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    os.environ["XSTILTS_CACHE"] = str(root / "xstilts")
    os.environ["HF_DATASETS_CACHE"] = str(root / "datasets")
    return root


@pytest.fixture
def tracking_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def tiny():
    """(encoder name, tokenizer) of the tiny XLM-R built from the fixtures."""
    from lightning_modules.encoders import load_encoder

    return load_encoder("tiny-xlmr")


@pytest.fixture(scope="session")
def registry():
    from datamodules.tasks import load_registry

    return load_registry()
