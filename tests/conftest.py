"""Test set-up. The environment is pointed at a test cache before anything imports the hub
clients (huggingface_hub reads its variables at import), so tests never touch the real caches;
fixture models are built once and reused across runs."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from models import fixture_cache, smollm2_dir, tiny_model_dir  # noqa: E402

CACHE = fixture_cache()
os.environ["QUANTKIT_HOME"] = str(CACHE / "home")
os.environ["HF_HOME"] = str(CACHE / "hf")
os.environ["MODELSCOPE_CACHE"] = str(CACHE / "modelscope")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for var in ("HF_TOKEN", "HF_ENDPOINT", "MODELSCOPE_API_TOKEN", "MODELSCOPE_ENDPOINT", "QUANTKIT_DEBUG"):
    os.environ.pop(var, None)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct as an HF checkpoint (bf16), from the bundled GGUF."""
    return smollm2_dir()


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    return tiny_model_dir("llama")


@pytest.fixture(scope="session")
def tiny_qwen2() -> Path:
    return tiny_model_dir("qwen2")


@pytest.fixture(params=["llama", "qwen2"])
def tiny_model(request) -> Path:
    return tiny_model_dir(request.param)
