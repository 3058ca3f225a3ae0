"""``quantkit push`` against the loopback hub, through the real huggingface_hub upload client:
push then download gives the same files, the card parses with ``ModelCard.load`` and carries the
measured numbers, a dropped upload resumes on rerun, failed / modified artifacts are refused, and
a bad token, missing rights or a full quota are one line."""

import json
import os
import shutil

# Fail fast on injected faults: modelscope reads these at import and otherwise retries for ~60 s.
for _name in ("MODELSCOPE_DOWNLOAD_MAX_RETRIES", "MODELSCOPE_API_MAX_RETRIES", "MODELSCOPE_UPLOAD_BLOB_MAX_ATTEMPTS"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("MODELSCOPE_DOWNLOAD_RETRY_MAX_DELAY_SECONDS", "1")
os.environ.setdefault("MODELSCOPE_UPLOAD_REACT_ENABLED", "false")

import pytest  # noqa: E402
from fakehub_upload import WRITE_TOKEN, upload_hub, upload_hub_session  # noqa: E402,F401
from huggingface_hub import ModelCard  # noqa: E402

from quantkit.benchmark.bench import BenchResult, Stat  # noqa: E402
from quantkit.benchmark.report import fill_card  # noqa: E402
from quantkit.cli import main  # noqa: E402
from quantkit.core.errors import GateFailed, IntegrityError, PushAuthError, PushError  # noqa: E402
from quantkit.core.manifest import MANIFEST, read_manifest  # noqa: E402
from quantkit.hub.download import download  # noqa: E402
from quantkit.hub.push import push  # noqa: E402

BASE = "acme/tiny-llama-base"
slow = pytest.mark.slow  # the first test using the int8 artifact makes it (~50 s: quantize + verify)


def bench_result(artifact, passed=True, tps=42.5, kld=0.0123, with_base=True) -> dict:
    """What `quantkit bench` returns, for the card (the artifact is real; its numbers are set);
    ``with_base=False``: benched with no base, so quality was never compared (unvalidated)."""
    return BenchResult(
        artifact=str(artifact),
        engine="transformers",
        method="int8",
        bits=8,
        size_bytes=2_000_000,
        weights_bytes=1_900_000,
        bits_per_weight=8.9,
        n_params=1_700_000,
        prompt_tokens=512,
        gen_tokens=128,
        repetitions=5,
        load_s=0.4,
        load_peak_rss_mb=300.0,
        peak_rss_mb=320.0,
        prefill=Stat(812.0, 4.0),
        decode=Stat(tps, 0.5),
        ttft=Stat(20.0, 1.0),
        decode_latency_ms={"p50": 20.0},
        bandwidth={},
        cuda={},
        environment={"cpu": "Test CPU 9000", "device": "cpu", "threads": 2},
        base=f"/root/.cache/{BASE}" if with_base else None,
        smoke={"passed": passed, "failures": [] if passed else ["turn 1: empty reply"], "transcript": ""},
        quality={"kld_mean": kld, "kld_p99": 0.2, "top1_agreement": 0.96, "ppl_ratio": 1.011, "tokenizer_parity": True}
        if with_base
        else None,
        failures=[] if passed else ["smoke: turn 1: empty reply"],
    ).to_dict()


@pytest.fixture(scope="session")
def int8_artifact(tiny_llama, tmp_path_factory):
    """A real int8 artifact of the tiny llama, made from a copy recorded as downloaded from BASE."""
    from quantkit.quantization.quantize import quantize

    root = tmp_path_factory.mktemp("push")
    base = root / "base"
    shutil.copytree(tiny_llama, base)
    (base / "quantkit-source.json").write_text(json.dumps({"source": "hf", "repo_id": BASE, "license": "apache-2.0"}))
    return quantize(base, "int8", root / "tiny-int8")


@pytest.fixture
def artifact(int8_artifact, tmp_path):
    """A benchmarked copy that a test may break."""
    folder = tmp_path / "tiny-int8"
    shutil.copytree(int8_artifact, folder)
    fill_card(folder, [bench_result(folder)])
    return folder


@slow
def test_push_then_download_gives_the_same_files_and_a_card_with_the_numbers(upload_hub, artifact, tmp_path):
    (artifact / "run.log").write_text(f"token={WRITE_TOKEN}\n")  # a stray log: never published
    result = push(artifact, "acme/tiny-int8", token=WRITE_TOKEN, endpoint=upload_hub.url)
    assert result.url.endswith("/acme/tiny-int8") and result.commit
    assert "run.log" not in {f.path for f in result.plan.files}
    [commit] = upload_hub.upload.commits
    assert commit["summary"].startswith("quantkit ") and f"int8 of {BASE}" in commit["summary"]

    back = download("acme/tiny-int8", endpoint=upload_hub.url, local_dir=tmp_path / "back", progress=False)
    manifest = read_manifest(artifact)
    for row in manifest["files"]:
        assert (back.path / row["path"]).read_bytes() == (artifact / row["path"]).read_bytes(), row["path"]
    assert not (back.path / "run.log").exists()
    published = json.loads((back.path / MANIFEST).read_text())
    assert published["files"] == manifest["files"]
    assert "/" not in json.dumps(published["source"]).replace(BASE, "")  # no local path left
    from quantkit.core.manifest import verify

    verify(back.path)  # the downloaded copy checks against its own manifest

    card = ModelCard.load(back.path / "README.md")
    assert card.data.base_model == BASE and card.data.base_model_relation == "quantized"
    assert card.data.license == "apache-2.0" and card.data.library_name == "transformers"
    assert {"quantkit", "int8", "bitsandbytes"} <= set(card.data.tags)
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics["kl_divergence"] == 0.0123 and metrics["generated_tokens_per_second"] == 42.5
    assert metrics["top1_agreement"] == 0.96 and metrics["perplexity_ratio"] == 1.011
    assert "| tiny-int8 | transformers | 8 |" in card.text and "42.5 ± 0.5" in card.text
    assert "Test CPU 9000" in card.text and "pass" in card.text
    assert 'from_pretrained("acme/tiny-int8"' in card.text
    assert "/root" not in card.content and "github.com/quantkit" not in card.content


def test_dropped_upload_then_rerun_completes(upload_hub, artifact, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)  # its retry backoff
    upload_hub.upload.drop_puts = 6  # more than huggingface_hub's 5 retries: this run gives up
    with pytest.raises(PushError, match="interrupted"):
        push(artifact, "acme/tiny-int8-drop", token=WRITE_TOKEN, endpoint=upload_hub.url)
    assert upload_hub.upload.commits == []
    push(artifact, "acme/tiny-int8-drop", token=WRITE_TOKEN, endpoint=upload_hub.url)
    back = download("acme/tiny-int8-drop", endpoint=upload_hub.url, local_dir=tmp_path / "back", progress=False)
    assert (back.path / "model.safetensors").read_bytes() == (artifact / "model.safetensors").read_bytes()
    # A third run sends no weights again: the hub has them.
    puts = len(upload_hub.upload.puts)
    push(artifact, "acme/tiny-int8-drop", token=WRITE_TOKEN, endpoint=upload_hub.url)
    assert len(upload_hub.upload.puts) == puts


def test_failed_unbenched_and_modified_artifacts_are_refused(upload_hub, artifact, int8_artifact, tmp_path):
    with pytest.raises(GateFailed, match="unvalidated .*no bench results"):
        push(int8_artifact, "acme/x", token=WRITE_TOKEN, endpoint=upload_hub.url)
    fill_card(artifact, [bench_result(artifact, passed=False)])
    with pytest.raises(GateFailed, match="failed its gates .*empty reply"):
        push(artifact, "acme/x", token=WRITE_TOKEN, endpoint=upload_hub.url)
    assert not any(method == "POST" for method, _ in upload_hub.log)  # refused before any request
    forced = push(artifact, "acme/failed-anyway", token=WRITE_TOKEN, endpoint=upload_hub.url, allow_failed=True)
    assert "**failed**" in forced.plan.card and "empty reply" in forced.plan.card
    with open(artifact / "config.json", "a") as fh:
        fh.write(" ")
    with pytest.raises(IntegrityError, match="refusing to push .*config.json"):
        push(artifact, "acme/x", token=WRITE_TOKEN, endpoint=upload_hub.url, allow_failed=True)


def test_unvalidated_is_refused_unless_allowed_and_the_card_says_so(upload_hub, artifact, capsys):
    """Benched with no base: no gate compared it with anything, so it is "unvalidated", not passed;
    push refuses it unless --allow-unvalidated, and then its card says it was published unvalidated."""
    fill_card(artifact, [bench_result(artifact, with_base=False)])
    with pytest.raises(GateFailed, match="unvalidated .*no base model: quality not compared") as refused:
        push(artifact, "acme/x", token=WRITE_TOKEN, endpoint=upload_hub.url)
    assert "--allow-unvalidated" in refused.value.hint
    code, out, err = cli(capsys, "push", str(artifact), "acme/x", "--token", WRITE_TOKEN, "--endpoint", upload_hub.url)
    assert code == GateFailed.exit_code and "unvalidated" in err and out == ""
    assert not any(method == "POST" for method, _ in upload_hub.log)  # refused before any request
    plan = push(artifact, "acme/x", endpoint=upload_hub.url, allow_unvalidated=True, dry_run=True).plan
    assert plan.verdict == "unvalidated" and plan.passed is False
    assert "**Published unvalidated** (`--allow-unvalidated`)" in plan.card and "no base model" in plan.card
    assert "*unvalidated*" in plan.card  # the results table's verdict column
    code, out, _ = cli(capsys, "push", str(artifact), "acme/x", "--allow-unvalidated", "--dry-run", "--endpoint", upload_hub.url)
    assert code == 0 and "Published unvalidated" in out
    # A failed artifact is still refused with --allow-unvalidated.
    fill_card(artifact, [bench_result(artifact, passed=False)])
    with pytest.raises(GateFailed, match="failed its gates"):
        push(artifact, "acme/x", endpoint=upload_hub.url, allow_unvalidated=True, dry_run=True)


def cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()  # only this command's output
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("source", ["hf", "modelscope"])
@pytest.mark.parametrize(
    "token, repo, quota, message",
    [
        ("hf_wrong", "acme/new-repo", None, "rejected the access token"),
        ("hf_read_elsewhere", "acme/new-repo", None, "cannot write to acme/new-repo"),
        (WRITE_TOKEN, "acme/big", 1000, "storage quota is full"),
    ],
)
def test_hub_refusals_are_one_line(upload_hub, artifact, capsys, source, token, repo, quota, message):
    if quota:
        upload_hub.upload.quota["acme"] = quota
    code, out, err = cli(
        capsys, "push", str(artifact), f"{repo}-{source}", "--source", source, "--token", token, "--endpoint", upload_hub.url
    )
    assert code != 0 and out == ""
    error = err.rstrip("\n").split("\n")[-1]  # after huggingface_hub's progress bar, if it started
    assert err.count("error") == 1 and error.startswith("error: ") and message in error, err
    assert token not in err


def test_dry_run_lists_files_and_card_and_sends_nothing(upload_hub, artifact, capsys):
    code, out, err = cli(capsys, "push", str(artifact), "acme/tiny-int8", "--dry-run", "--endpoint", upload_hub.url)
    assert code == 0, err
    assert "model.safetensors" in out and "README.md  (written for the repo)" in out and "dry run" in out
    assert "base_model_relation: quantized" in out and "| tiny-int8 |" in out
    assert upload_hub.log == []


def test_push_to_a_branch_of_a_private_repo(upload_hub, artifact, tmp_path, capsys):
    code, out, err = cli(
        capsys,
        "push",
        str(artifact),
        "acme/private-int8",
        "--private",
        "--revision",
        "v1",
        "--token",
        WRITE_TOKEN,
        "--endpoint",
        upload_hub.url,
    )
    assert code == 0, err
    assert out.strip().endswith("/acme/private-int8") and "@v1" in err
    with pytest.raises(Exception, match="authentication|not found"):
        download("acme/private-int8", revision="v1", endpoint=upload_hub.url, local_dir=tmp_path / "anon", progress=False)
    back = download(
        "acme/private-int8",
        revision="v1",
        token=WRITE_TOKEN,
        endpoint=upload_hub.url,
        local_dir=tmp_path / "back",
        progress=False,
    )
    assert (back.path / "model.safetensors").read_bytes() == (artifact / "model.safetensors").read_bytes()


def test_modelscope_push_resumes_and_downloads_back(upload_hub, artifact, tmp_path, capsys):
    def ms_push(token=WRITE_TOKEN):
        return push(artifact, "acme/tiny-int8-ms", source="modelscope", token=token, endpoint=upload_hub.url)

    with pytest.raises(PushAuthError, match="rejected the access token"):
        ms_push("ms-wrong")
    upload_hub.upload.drop_puts = 50  # every blob upload is cut off (its own retries included): this run fails
    with pytest.raises(PushError, match="interrupted"):
        ms_push()
    partial = upload_hub.repos["acme/tiny-int8-ms"]
    assert "README.md" not in partial.commits[partial.branches["master"]]  # no card over missing weights
    upload_hub.upload.drop_puts = 0
    result = ms_push()
    assert result.url.endswith("/models/acme/tiny-int8-ms") and result.commit
    assert upload_hub.upload.commits[-1]["summary"].startswith(f"quantkit {__import__('quantkit').__version__}: int8")
    back = download(
        "acme/tiny-int8-ms", source="modelscope", endpoint=upload_hub.url, local_dir=tmp_path / "back", progress=False
    )
    for row in read_manifest(artifact)["files"]:
        assert (back.path / row["path"]).read_bytes() == (artifact / row["path"]).read_bytes(), row["path"]
    card = ModelCard.load(back.path / "README.md")
    assert card.data.base_model == BASE and "modelscope download --model acme/tiny-int8-ms" in card.text
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["kl_divergence"] == 0.0123
    code, out, err = cli(
        capsys,
        "push",
        str(artifact),
        "acme/elsewhere",
        "--source",
        "modelscope",
        "--token",
        "ms-wrong",
        "--endpoint",
        upload_hub.url,
    )
    assert code != 0 and out == "" and err.count("\n") == 1 and "rejected the access token" in err, err


def test_multi_file_gguf_card_is_one_table(tmp_path):
    from quantkit.core.card import write_model_card
    from quantkit.core.manifest import write_manifest
    from quantkit.quantization.base import MethodResult, artifact_facts
    from quantkit.quantization.registry import get_method

    settings = {"bits": 8, "gguf_types": ["Q8_0", "Q4_K_M"]}
    facts = artifact_facts(get_method("gguf"), MethodResult("gguf", "llama.cpp", settings))  # as quantize records it

    folder = tmp_path / "smollm2-gguf"
    folder.mkdir()
    for t in ("Q8_0", "Q4_K_M"):
        (folder / f"m-{t}.gguf").write_bytes(t.encode() * 100)
    manifest = write_manifest(
        folder,
        {
            "method": "gguf",
            "format": "gguf",
            "settings": settings,
            "runtimes": facts.pop("runtimes"),
            "card": facts,
            "source": {"repo_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "apache-2.0"},
        },
    )
    write_model_card(folder, manifest, "use it")
    fill_card(folder, [bench_result(folder / "m-Q8_0.gguf", tps=60.0), bench_result(folder / "m-Q4_K_M.gguf", tps=80.0)])
    card = ModelCard.load(folder / "README.md")
    assert card.text.count("| file |") == 1
    assert "| m-Q8_0.gguf |" in card.text and "| m-Q4_K_M.gguf |" in card.text
    speeds = {(r.metric_config, r.metric_value) for r in card.data.eval_results if r.metric_type == "generated_tokens_per_second"}
    assert speeds == {("m-Q8_0.gguf", 60.0), ("m-Q4_K_M.gguf", 80.0)}
    assert card.data.library_name == "gguf" and "llama.cpp" in card.data.tags


def test_recipe_pushes_only_what_passed(upload_hub, int8_artifact, tmp_path, monkeypatch):
    """``push:`` in a recipe: after the gates, the passing artifact is published, the failing one
    is not, nor the unvalidated one (benched with no base) unless ``allow_unvalidated`` (the
    quantize and bench stages are replaced; their real tests are elsewhere)."""
    import importlib

    from quantkit.pipeline import run as pipeline
    from quantkit.pipeline.recipe import parse_recipe

    monkeypatch.setattr(
        importlib.import_module("quantkit.quantization.quantize"),
        "quantize",  # the module, not the API
        lambda model, method, final, options, overwrite: shutil.copytree(int8_artifact, final),
    )
    monkeypatch.setattr(
        pipeline,
        "bench_one",
        lambda target, base, recipe: bench_result(target, passed=target.name != "bad", with_base=target.name != "unchecked"),
    )
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", upload_hub.url)
    recipe = parse_recipe(
        f"""
name: pushy
model: {{id: {int8_artifact.parent / "base"}}}
artifacts:
  - {{name: good, method: int8}}
  - {{name: bad, method: int8}}
  - {{name: unchecked, method: int8}}
push:
  repo: acme/pushy-{{name}}
  private: true
""",
        tmp_path / "pushy.yaml",
    )
    summary = pipeline.run(recipe, tmp_path / "run")
    good, bad, unchecked = summary.artifacts
    assert good.stages["push"] == "done" and good.pushed.endswith("/acme/pushy-good")
    assert bad.status == "gate_failed" and bad.stages["push"] == "skipped" and bad.pushed is None
    assert unchecked.status == "unvalidated" and unchecked.stages["push"] == "skipped" and summary.exit_code == 3
    assert unchecked.unvalidated == ["unchecked: no base model: quality not compared"]
    assert "acme/pushy-unchecked" not in upload_hub.repos
    assert "acme/pushy-good" in upload_hub.repos and "acme/pushy-bad" not in upload_hub.repos
    assert upload_hub.repos["acme/pushy-good"].private
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["artifacts"][0]["pushed"] == good.pushed
    card = ModelCard.load(tmp_path / "run" / "artifacts" / "good" / "README.md")
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["kl_divergence"] == 0.0123


def test_recipe_push_section_is_strict(tmp_path):
    from quantkit.pipeline.recipe import RecipeError, parse_recipe

    text = """name: t
model: {id: bundled:smollm2-135m-instruct}
artifacts:
  - {name: a, method: int8}
  - {name: b, method: nf4}
push:
  repo: acme/one-repo
"""
    with pytest.raises(RecipeError, match="push.repo: 2 artifacts would be pushed to one repo"):
        parse_recipe(text)
    with pytest.raises(RecipeError, match="push.token: unknown key"):
        parse_recipe(text.replace("acme/one-repo", "acme/x-{name}\n  token: hf_secret"))
    assert parse_recipe(text.replace("acme/one-repo", "acme/x-{name}")).push.repo_for("a") == "acme/x-a"


@pytest.mark.slow
def test_smollm2_gguf_pushes_and_downloads_back_with_one_table(upload_hub, smollm2, tmp_path, capsys):
    """The bundled SmolLM2 as a two-file GGUF artifact: dry run, push, download back identical."""
    from quantkit.quantization.gguf.method import GgufOptions
    from quantkit.quantization.quantize import quantize

    folder = quantize(str(smollm2), "gguf", tmp_path / "smollm2-gguf", GgufOptions(gguf_types=["Q8_0", "Q6_K"]))
    ggufs = sorted(folder.glob("*.gguf"))
    assert len(ggufs) == 2
    fill_card(folder, [bench_result(path, tps=60.0 + i) for i, path in enumerate(ggufs)])
    code, out, err = cli(capsys, "push", str(folder), "acme/smollm2-gguf", "--dry-run")
    assert code == 0 and all(p.name in out for p in ggufs), err
    code, out, err = cli(capsys, "push", str(folder), "acme/smollm2-gguf", "--token", WRITE_TOKEN, "--endpoint", upload_hub.url)
    assert code == 0 and out.strip().endswith("/acme/smollm2-gguf"), err
    back = download("acme/smollm2-gguf", endpoint=upload_hub.url, local_dir=tmp_path / "back", progress=False)
    for row in read_manifest(folder)["files"]:
        assert (back.path / row["path"]).read_bytes() == (folder / row["path"]).read_bytes(), row["path"]
    card = ModelCard.load(back.path / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.license == "apache-2.0"
    assert card.data.library_name == "gguf" and card.text.count("| file |") == 1
    assert all(f"| {p.name} | transformers |" in card.text for p in ggufs)
    assert f'Llama.from_pretrained(repo_id="acme/smollm2-gguf", filename="{ggufs[0].name}")' in card.text
