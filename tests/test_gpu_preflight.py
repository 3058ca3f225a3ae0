"""The GPU path checked on the CPU: the memory preflight's GPU branch against a faked
``torch.cuda`` (what cannot exist here), RAM factors that follow where the weights live, the
bench's honest numbers (dequantized artifacts, llama.cpp's offload and device memory, the logits
cache key), the bandwidth probe's sizing, and the estimates against a measured peak (slow)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from quantkit.core import estimate, estimate_files, memory, preflight
from quantkit.core.errors import PreflightError
from quantkit.quantization.registry import get_method, make_options

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
GiB = 2**30


def config(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA GPU as torch would report it: ``fake_gpu(free_gib, total_gib)``. NVML is faked
    absent so the preflight reads torch's ``mem_get_info`` (a real driver would win otherwise)."""
    import torch

    def install(free_gib: float, total_gib: float = 24):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (int(free_gib * GiB), int(total_gib * GiB)))
        monkeypatch.setattr(memory, "nvml_memory", lambda index=0: None)

    return install


@pytest.fixture
def plenty_of_ram(monkeypatch):
    """RAM is not what these tests are about: make it ample (the real value varies by machine)."""
    import psutil

    class Ample:
        available = total = 1 << 50

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Ample)


def footprint(method: str, **settings):
    return get_method(method).footprint(make_options(method, settings))


def check_memory(config: dict, method: str, **settings):
    options = make_options(method, settings)
    return preflight.check_quantize_memory(config, method, get_method(method).footprint(options), options)


def test_quantize_refuses_when_the_gpu_is_too_small(fake_gpu, plenty_of_ram):
    fake_gpu(free_gib=4, total_gib=24)
    with pytest.raises(PreflightError) as info:
        check_memory(config("llama-3.1-8b-instruct"), "nf4", device="cuda")
    message, hint = str(info.value), info.value.hint
    assert "GPU memory" in message and "4.0 GB free of 24.0 GB" in message and "\n" not in message
    assert "`force=True`" in hint and "force: true" in hint  # the CLI says --force (cli.as_flags)


def test_quantize_passes_when_it_fits_and_force_skips(fake_gpu, plenty_of_ram):
    llama = config("llama-3.1-8b-instruct")
    fake_gpu(free_gib=23, total_gib=24)
    need = check_memory(llama, "nf4", device="cuda")
    assert 16 * GiB < need.gpu_bytes < 18 * GiB  # verification: the bf16 base (15 GiB) on the GPU, its logits, 2 contexts
    fake_gpu(free_gib=12, total_gib=24)
    small = check_memory(llama, "nf4", device="cuda")  # verification falls back to the CPU: only quantizing counts
    assert 5 * GiB < small.gpu_bytes < 10 * GiB  # ~5.6 GB of NF4 weights + the embedding table in 16 bits
    assert small.ram_bytes > 15 * GiB and "verification in RAM" in small.why
    fake_gpu(free_gib=0.5, total_gib=24)
    forced = check_memory(llama, "nf4", device="cuda", force=True)
    assert forced.gpu_bytes == need.gpu_bytes  # skipped, estimate unchanged


def test_quantize_cli_refuses_in_one_line(fake_gpu, plenty_of_ram, tmp_path, capsys):
    from quantkit.cli import main

    model = tmp_path / "llama"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(config("llama-3.1-8b-instruct")))
    fake_gpu(free_gib=2, total_gib=16)
    with pytest.raises(SystemExit) as exc:
        main(["quantize", str(model), "--method", "nf4", "--device", "cuda", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code != 0 and len(err) == 1 and err[0].startswith("error: "), err
    assert "GPU memory" in err[0] and "--force" in err[0]
    assert not (tmp_path / "out").exists()


def test_ram_factors_follow_where_the_weights_live():
    """GPU runs no longer demand 2x the bf16 size in RAM (Llama-3.1-8B nf4 demanded 30.5 GiB)."""
    llama = config("llama-3.1-8b-instruct")
    bf16 = estimate.estimate_params(llama) * 2
    gpu_nf4 = estimate.quantize_need(llama, footprint("nf4"), "cuda")
    cpu_nf4 = estimate.quantize_need(llama, footprint("nf4"), "cpu")
    # On a CPU: read with pread, then the base verified in fp32 one module at a time (not 2x bf16).
    assert gpu_nf4.ram_bytes < 8 * GiB and bf16 < cpu_nf4.ram_bytes < 1.3 * bf16
    assert cpu_nf4.gpu_bytes == 0
    # AWQ on a GPU: the model stays in RAM in bf16 (not fp32), one layer at a time on the GPU
    # (verify_on="cpu": calibration alone; verification's own share is tested below).
    awq = footprint("awq", calib_samples=128, calib_seq_len=512)
    gpu_awq = estimate.quantize_need(llama, awq, "cuda", verify_on="cpu")
    assert bf16 < gpu_awq.ram_bytes < 1.6 * bf16
    assert gpu_awq.gpu_bytes < bf16 / 1.5
    more = estimate.quantize_need(llama, footprint("awq", calib_samples=512, calib_seq_len=512), "cuda", verify_on="cpu")
    # 384 more samples x 512 tokens of cached parent inputs (self_attn's with rotary cos/sin, MLP,
    # down_proj; not o_proj's: grouped KV heads) and of one parent's unquantized and quantized
    # outputs, in bf16
    assert more.gpu_bytes - gpu_awq.gpu_bytes == 384 * 512 * (2 * 4096 + 2 * 128 + 14336 + 2 * 4096) * 2
    # Ignoring down_proj drops its (intermediate-wide) cached inputs.
    keep = estimate.quantize_need(
        llama, footprint("awq", calib_samples=128, calib_seq_len=512, ignore=["re:.*down_proj"]), "cuda", verify_on="cpu"
    )
    assert keep.gpu_bytes < gpu_awq.gpu_bytes
    assert estimate.quantize_need(llama, footprint("gguf"), "cpu").gpu_bytes == 0  # converter on CPU


def test_bench_estimate_counts_one_model_dense_awq_and_kv():
    qwen = config("qwen2.5-7b-instruct")
    n = estimate.estimate_params(qwen)
    awq, dequantized = estimate.runtime_bytes(qwen, footprint("awq"), "cuda")
    assert dequantized and awq == n * 2  # decompressed to bf16 on the first forward
    nf4, dequantized = estimate.runtime_bytes(qwen, footprint("nf4"), "cuda")
    assert not dequantized and nf4 < awq / 2.5
    alone = estimate.bench_need(qwen, footprint("nf4"), "cuda", 4096, with_base=False)
    with_base = estimate.bench_need(qwen, footprint("nf4"), "cuda", 4096, with_base=True)
    assert alone.gpu_bytes < with_base.gpu_bytes < n * 2 + 3 * GiB  # the base's, not base + artifact
    long = estimate.bench_need(qwen, footprint("nf4"), "cuda", 32768, with_base=False)
    assert long.gpu_bytes - alone.gpu_bytes == estimate.kv_cache_bytes(qwen, 32768 - 4096)
    half = estimate.bench_need(qwen, footprint("gguf"), "cuda", 4096, with_base=False, n_gpu_layers=14)
    full = estimate.bench_need(qwen, footprint("gguf"), "cuda", 4096, with_base=False, n_gpu_layers=-1)
    assert half.gpu_bytes < full.gpu_bytes and half.ram_bytes > full.ram_bytes


def test_bench_preflight_refuses_before_loading(fake_gpu, plenty_of_ram, tiny_llama, tmp_path):
    from quantkit.benchmark.bench import BenchOptions, bench, memory_preflight

    fake_gpu(free_gib=0.01, total_gib=8)  # 10 MB free: not even the CUDA context fits
    with pytest.raises(PreflightError, match="bench of .* needs about .* of GPU memory"):
        bench(tiny_llama, options=BenchOptions(device="cuda", smoke=False, quality=False))
    options = BenchOptions(device="cuda", smoke=False, quality=False, force=True)
    assert memory_preflight(tiny_llama, "transformers", None, options, 4096).gpu_bytes > 0  # forced: no error
    fake_gpu(free_gib=7, total_gib=8)
    memory_preflight(tiny_llama, "transformers", None, BenchOptions(device="cuda"), 4096)


def test_bench_estimate_from_files_reads_dense_size_of_compressed_tensors(tmp_path, tiny_llama):
    folder = tmp_path / "awq"
    folder.mkdir()
    cfg = json.loads((tiny_llama / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "quantization_config": {"quant_method": "compressed-tensors"}}))
    (folder / "model.safetensors").write_bytes(b"\0" * 1000)
    need = estimate_files.bench_need_for(folder, None, "cuda", 4096)
    assert need.gpu_bytes >= estimate.estimate_params(cfg) * 2 + estimate.CUDA_OVERHEAD_BYTES


def test_dry_run_plan_has_ram_and_gpu_for_gpu_recipes(monkeypatch, tmp_path):
    from quantkit.pipeline.plan import plan
    from quantkit.pipeline.recipe import load_recipe

    monkeypatch.setenv("QUANTKIT_CONFIG_DIR", str(CONFIGS))
    recipe = load_recipe("llama-3.1-8b-instruct")
    rows = plan(recipe, recipe.artifacts, tmp_path / "o", force=False)
    by = {(r.stage, r.artifact): r.cost for r in rows}
    assert by[("quantize", "nf4")].memory_bytes < 8 * GiB and by[("quantize", "nf4")].gpu_bytes > 5 * GiB
    assert by[("quantize", "gguf")].gpu_bytes == 0
    assert by[("bench", "awq")].gpu_bytes > 14 * GiB  # dense bf16 in transformers


def test_llamacpp_offload_on_cuda_means_all_layers():
    from quantkit.engines.llamacpp import offload_layers

    assert offload_layers("cuda", 0, True) == (-1, [])  # the default 0 with --device cuda: every layer
    assert offload_layers("cuda", None, True) == (-1, [])
    assert offload_layers("cuda", 10, True) == (10, [])
    assert offload_layers("cpu", -1, True) == (0, [])
    assert offload_layers("auto", 0, True) == (0, [])
    layers, warnings = offload_layers("auto", -1, False)
    assert layers == 0 and "ran on the CPU" in warnings[0]


def test_an_engines_own_device_memory_comes_from_the_device_not_torch(monkeypatch):
    readings = iter([{"free": 20 * GiB, "total": 24 * GiB, "used": 4 * GiB, "source": "nvml"}])
    monkeypatch.setattr(memory, "device_memory", lambda create_context=False: next(readings))
    stats = memory.own_device_memory({"free": 23 * GiB, "total": 24 * GiB, "used": 1 * GiB, "source": "nvml"})
    assert stats == {"device_used_mb": 4096.0, "source": "nvml", "model_device_mb": 3072.0}
    monkeypatch.setattr(memory, "device_memory", lambda create_context=False: None)
    assert memory.own_device_memory(None) == {}


def test_device_memory_never_creates_a_torch_context(monkeypatch):
    import torch

    monkeypatch.setattr(memory, "nvml_memory", lambda index=0: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    called = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: called.append(1) or (1, 2))
    assert memory.device_memory() is None and not called  # no context yet: not made for a reading
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert memory.device_memory() == {"free": 1, "total": 2, "used": 1, "source": "torch.cuda.mem_get_info"}


def test_cuda_bandwidth_probe_sizes_to_free_memory_and_survives_oom(monkeypatch):
    import torch

    from quantkit.benchmark import bandwidth

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (256 * 2**20, 24 * GiB))
    assert bandwidth.measure_cuda_copy_gbps() is None  # 256 MB free: two 32 MB buffers would measure cache
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (8 * GiB, 24 * GiB))
    sizes = []

    def ones(n, **kwargs):
        sizes.append(n * 4)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch, "ones", ones)
    assert bandwidth.measure_cuda_copy_gbps() is None
    assert sizes == [1024 * 2**20]  # 1 GiB buffers: a quarter of 8 GiB free holds both
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (2 * GiB, 24 * GiB))
    bandwidth.measure_cuda_copy_gbps()
    assert sizes[-1] == 256 * 2**20


def test_logits_cache_key_includes_device_and_dtype(tiny_llama):
    from quantkit.benchmark.quality import QualityOptions, reference_key
    from quantkit.engines import EngineOptions

    options = QualityOptions()
    keys = {
        reference_key(tiny_llama, "text", options, "transformers", EngineOptions(device=d, dtype=t))
        for d, t in (("cpu", None), ("cuda", None), ("cuda", "bfloat16"), ("cpu", "float32"))
    }
    assert len(keys) == 4


def test_dequantized_awq_bandwidth_counts_dense_weights_only():
    """After decompression a compressed-tensors Linear is dense; its leftover scales are not read."""
    import torch

    from quantkit.engines.weights_read import torch_decode_bytes

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 8)
            self.proj = torch.nn.Linear(8, 8, bias=False)
            self.proj.register_parameter("weight_scale", torch.nn.Parameter(torch.ones(8, 1), requires_grad=False))
            self.head = torch.nn.Linear(8, 10, bias=False)

        def get_input_embeddings(self):
            return self.embed

        def get_output_embeddings(self):
            return self.head

    read = torch_decode_bytes(Tiny())
    assert read["bytes"] == (8 * 8 + 10 * 8 + 8) * 4  # proj + head + one embedding row, no scale


@pytest.mark.slow
def test_nf4_quantize_peak_rss_within_the_estimate(tmp_path):
    """A 1.1B random Llama-shaped checkpoint (bf16), NF4 on the CPU in a fresh process: its peak
    RSS is under the preflight's estimate and the estimate is no more than 2.5x the peak."""
    import transformers
    from models import fixture_cache

    model = fixture_cache() / f"random-llama-1b-{transformers.__version__}"
    if not (model / "model.safetensors").is_file():
        build = (
            "import sys, torch\nfrom transformers import LlamaConfig, AutoModelForCausalLM\n"
            "cfg = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, "
            "num_attention_heads=16, num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False)\n"
            "cfg.architectures = ['LlamaForCausalLM']\n"
            "torch.manual_seed(0)\n"
            "m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)\n"
            "m.save_pretrained(sys.argv[1])\n"
        )
        partial = model.with_name(model.name + ".partial")
        subprocess.run([sys.executable, "-c", build, str(partial)], check=True, timeout=600)
        partial.rename(model)
    cfg = json.loads((model / "config.json").read_text())
    assert 1.0e9 < estimate.estimate_params(cfg) < 1.2e9
    need = estimate.quantize_need(cfg, footprint("nf4"), "cpu")
    code = (
        "import sys, resource, logging\nfrom transformers import AutoModelForCausalLM, BitsAndBytesConfig\n"
        "logging.disable(logging.WARNING)\n"
        "q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True)\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], quantization_config=q, device_map='cpu', dtype='auto')\n"
        "m.save_pretrained(sys.argv[2])\n"
        "from quantkit.core.memory import own_peak_rss\nprint(own_peak_rss())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(model), str(tmp_path / "nf4")], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    peak = int(out.stdout.split()[-1])
    print(f"nf4 1.1B: peak RSS {peak / GiB:.2f} GiB, estimate {need.ram_bytes / GiB:.2f} GiB")
    assert peak <= need.ram_bytes <= 2.5 * peak, (peak, need.ram_bytes)


def test_nvml_reading_follows_cuda_visible_devices(monkeypatch):
    """NVML numbers GPUs physically; CUDA device 0 is the first of CUDA_VISIBLE_DEVICES."""
    import types

    asked = []

    class Info:
        free, total = 3 * GiB, 48 * GiB

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetMemoryInfo=lambda handle: Info,
        nvmlDeviceGetHandleByIndex=lambda i: asked.append(("index", i)),
        nvmlDeviceGetHandleByUUID=lambda u: asked.append(("uuid", u)),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert memory.nvml_memory() == (3 * GiB, 48 * GiB) and asked == [("index", 2)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234")
    memory.nvml_memory()
    assert asked[-1] == ("uuid", "GPU-1234")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    memory.nvml_memory()
    assert asked[-1] == ("index", 0)


def test_bench_cli_refuses_in_one_line_and_force_gets_past_it(fake_gpu, plenty_of_ram, tiny_llama, capsys):
    from quantkit.cli import main

    fake_gpu(free_gib=0.01, total_gib=8)
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(tiny_llama), "--device", "cuda", "--no-smoke", "--no-quality"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code != 0 and len(err) == 1 and "GPU memory" in err[0] and "--force" in err[0], err
    with pytest.raises(SystemExit):  # past the preflight, the (fake) GPU fails at load instead
        main(["bench", str(tiny_llama), "--device", "cuda", "--no-smoke", "--no-quality", "--force"])
    assert "GPU memory" not in capsys.readouterr().err
