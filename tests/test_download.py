"""quantkit.hub.download.download against the loopback fake hub, through the real snapshot_download of
huggingface_hub and modelscope: pinning, patterns, dry run, safety refusals, integrity, errors."""

import hashlib
import json
import os
import socket
from collections import namedtuple

# Fail fast on injected faults: modelscope reads these at import and otherwise backs off for ~30 s.
os.environ.setdefault("MODELSCOPE_DOWNLOAD_MAX_RETRIES", "1")
os.environ.setdefault("MODELSCOPE_DOWNLOAD_RETRY_MAX_DELAY_SECONDS", "1")
os.environ.setdefault("MODELSCOPE_API_MAX_RETRIES", "1")

import pytest  # noqa: E402
from fakehub import TOKEN, fake_hub, fake_hub_session, tiny_llama_files  # noqa: E402,F401

from quantkit.core.errors import DownloadError, InputError, IntegrityError, PreflightError  # noqa: E402
from quantkit.core.events import listen  # noqa: E402
from quantkit.core.manifest import SOURCE_MANIFEST  # noqa: E402
from quantkit.hub.download import download  # noqa: E402

SOURCES = ["hf", "modelscope"]
REPO = "acme/tiny-llama"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(fake_hub, source, tmp_path, repo=REPO, **kwargs):
    kwargs.setdefault("local_dir", tmp_path / "out")
    return download(repo, source=source, endpoint=fake_hub.url, progress=False, **kwargs)


def fresh_repo(fake_hub) -> tuple[str, dict[str, bytes]]:
    """A repo no earlier run has cached (huggingface_hub copies cached blobs into --local-dir)."""
    files = tiny_llama_files(layers=1, **{"nonce.txt": os.urandom(8).hex().encode()})
    repo = f"acme/fresh-{os.urandom(4).hex()}"
    fake_hub.hub.commit(repo, files)
    return repo, files


def dead_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed again when this returns


@pytest.mark.parametrize("source", SOURCES)
def test_download_into_cache_verified_with_manifest(fake_hub, source):
    seen = []

    def preflight(result):  # called before any weight is fetched
        seen.append((result.info.architecture, result.total_bytes, fake_hub.hub.gets("model.safetensors")))

    result = download(REPO, source=source, endpoint=fake_hub.url, progress=False, on_preflight=preflight)
    served = fake_hub.files["main"]
    expected = sorted(name for name in served if name != "pytorch_model.bin")
    assert result.commit == fake_hub.commits["main"]
    assert result.commit in str(result.path)  # the cache folder of the pinned commit
    assert sorted(f.name for f in result.files) == expected
    assert result.skipped_pickle == ["pytorch_model.bin"]
    assert not (result.path / "pytorch_model.bin").exists()
    assert seen == [("LlamaForCausalLM", sum(len(served[n]) for n in expected), 0)]
    assert result.info.num_layers == 2 and result.info.dtype == "bfloat16"
    for name in expected:
        assert (result.path / name).read_bytes() == served[name]

    manifest = json.loads((result.path / SOURCE_MANIFEST).read_text())
    assert manifest["source"] == source and manifest["repo_id"] == REPO
    assert manifest["revision"] == {"hf": "main", "modelscope": "master"}[source]
    assert manifest["commit"] == fake_hub.commits["main"]
    assert manifest["downloaded_at"].startswith("20")
    assert {row["path"]: (row["size"], row["sha256"]) for row in manifest["files"]} == {
        name: (len(served[name]), sha256(served[name])) for name in expected
    }


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("pin", ["tag", "branch", "commit"])
def test_revision_pinning(fake_hub, source, pin, tmp_path):
    key = {"tag": "v1.0", "branch": "dev", "commit": "v1.0"}[pin]
    revision = fake_hub.commits[key] if pin == "commit" else key
    result = fetch(fake_hub, source, tmp_path, revision=revision)
    assert result.commit == fake_hub.commits[key]
    got = {f.name for f in result.files}
    assert got == set(fake_hub.files[key])
    assert (result.path / "config.json").read_bytes() == fake_hub.files[key]["config.json"]
    assert json.loads((result.path / SOURCE_MANIFEST).read_text())["revision"] == revision


@pytest.mark.parametrize("source", SOURCES)
def test_include_exclude(fake_hub, source, tmp_path):
    result = fetch(fake_hub, source, tmp_path, include=["*.json"], exclude=["tokenizer*"])
    assert [f.name for f in result.files] == ["config.json"]
    assert fake_hub.hub.gets("model.safetensors") == 0
    assert not (tmp_path / "out" / "tokenizer.json").exists()


@pytest.mark.parametrize("source", SOURCES)
def test_dry_run_downloads_nothing(fake_hub, source, tmp_path):
    result = fetch(fake_hub, source, tmp_path, dry_run=True)
    served = fake_hub.files["main"]
    assert result.dry_run and not (tmp_path / "out").exists()
    assert result.total_bytes == sum(len(d) for n, d in served.items() if n != "pytorch_model.bin")
    assert result.info.architecture == "LlamaForCausalLM"
    assert fake_hub.hub.gets("model.safetensors") == 0


@pytest.mark.parametrize("source", SOURCES)
def test_pickle_only_repo_refused_unless_allowed(fake_hub, source, tmp_path):
    with pytest.raises(PreflightError, match="pickle"):
        fetch(fake_hub, source, tmp_path, repo="acme/pickle-only")
    assert fake_hub.hub.gets("pytorch_model.bin") == 0
    result = fetch(fake_hub, source, tmp_path, repo="acme/pickle-only", allow_pickle=True)
    assert (result.path / "pytorch_model.bin").is_file()


@pytest.mark.parametrize("source", SOURCES)
def test_path_traversal_in_listing_refused(fake_hub, source, tmp_path):
    with pytest.raises(DownloadError, match="unsafe file name"):
        fetch(fake_hub, source, tmp_path, repo="acme/evil", local_dir=tmp_path / "a" / "b")
    assert not any(tmp_path.rglob("escape.txt"))
    assert fake_hub.hub.gets("config.json") == 0


Case = namedtuple("Case", "repo kwargs error match")
BAD_INPUTS = {
    "unknown repo": Case("acme/nope", {}, DownloadError, "not found"),
    "unknown revision": Case(REPO, {"revision": "no-such-branch"}, DownloadError, "revision 'no-such-branch' not found"),
    "gated without token": Case("acme/gated", {}, DownloadError, "needs authentication"),
    "private without token": Case("acme/private", {}, DownloadError, "`token`"),  # the CLI says --token
    "no file matched": Case(REPO, {"include": ["*.gguf"]}, InputError, "no file of"),
    "not a repo id": Case("../etc", {}, InputError, "not a hub repo id"),
    "unknown source": Case(REPO, {"source": "gitlab"}, InputError, "unknown source"),
}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_typed_error(fake_hub, source, case, tmp_path):
    repo, kwargs, error, match = BAD_INPUTS[case]
    kwargs = {"source": source, **kwargs}
    with pytest.raises(error, match=match) as caught:
        download(repo, endpoint=fake_hub.url, local_dir=tmp_path / "out", progress=False, **kwargs)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out" / SOURCE_MANIFEST).exists()


@pytest.mark.parametrize("source", SOURCES)
def test_network_unreachable(source, tmp_path):
    with pytest.raises(DownloadError, match="cannot reach"):
        download(REPO, source=source, endpoint=dead_endpoint(), local_dir=tmp_path, progress=False)


@pytest.mark.parametrize("source", SOURCES)
def test_unreachable_hub_falls_back_to_a_verified_copy(fake_hub, source, tmp_path):
    first = fetch(fake_hub, source, tmp_path, revision="v1.0")
    again = download(REPO, source=source, revision="v1.0", endpoint=dead_endpoint(), local_dir=tmp_path / "out", progress=False)
    assert again.offline and again.path == first.path and again.commit == first.commit
    assert again.files == first.files
    cached = download(REPO, source=source, endpoint=fake_hub.url, progress=False)  # into the cache
    offline = download(REPO, source=source, endpoint=dead_endpoint(), progress=False)
    assert offline.offline and offline.path == cached.path
    (first.path / SOURCE_MANIFEST).unlink()  # not verified: no fallback
    with pytest.raises(DownloadError, match="cannot reach"):
        download(REPO, source=source, revision="v1.0", endpoint=dead_endpoint(), local_dir=tmp_path / "out")


@pytest.mark.parametrize("source", SOURCES)
def test_token_from_argument_and_environment(fake_hub, source, tmp_path, monkeypatch):
    result = fetch(fake_hub, source, tmp_path, repo="acme/gated", token=TOKEN)
    assert (result.path / "model.safetensors").is_file()
    monkeypatch.setenv({"hf": "HF_TOKEN", "modelscope": "MODELSCOPE_API_TOKEN"}[source], TOKEN)
    result = fetch(fake_hub, source, tmp_path, repo="acme/gated", local_dir=tmp_path / "env")
    assert (result.path / SOURCE_MANIFEST).is_file()
    result = fetch(fake_hub, source, tmp_path, repo="acme/private", local_dir=tmp_path / "private")
    assert (result.path / SOURCE_MANIFEST).is_file()


@pytest.mark.parametrize("source", SOURCES)
def test_endpoint_from_environment(fake_hub, source, tmp_path, monkeypatch):
    monkeypatch.setenv({"hf": "HF_ENDPOINT", "modelscope": "MODELSCOPE_ENDPOINT"}[source], fake_hub.url)
    result = download(REPO, source=source, local_dir=tmp_path, include=["config.json"], progress=False)
    assert json.loads((result.path / SOURCE_MANIFEST).read_text())["endpoint"] == fake_hub.url


def test_refuses_early_without_disk_room(fake_hub, tmp_path, monkeypatch):
    import quantkit.hub.download

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(quantkit.hub.download.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    with pytest.raises(PreflightError, match="not enough disk space"):
        fetch(fake_hub, "hf", tmp_path)
    assert fake_hub.hub.gets("/resolve/") == 0


@pytest.mark.parametrize("source", SOURCES)
def test_checksum_mismatch_removes_the_file(fake_hub, source, tmp_path):
    repo, files = fresh_repo(fake_hub)
    fake_hub.hub.corrupt.add("model.safetensors")
    with pytest.raises(IntegrityError, match="model.safetensors"):
        fetch(fake_hub, source, tmp_path, repo=repo)
    out = tmp_path / "out"
    assert not (out / "model.safetensors").exists()
    assert not (out / SOURCE_MANIFEST).exists()
    fake_hub.hub.corrupt.clear()
    result = fetch(fake_hub, source, tmp_path, repo=repo)
    assert (result.path / "model.safetensors").read_bytes() == files["model.safetensors"]


@pytest.mark.parametrize("source", SOURCES)
def test_interrupted_transfer_then_rerun_completes(fake_hub, source, tmp_path):
    repo, files = fresh_repo(fake_hub)
    fake_hub.hub.drop["model.safetensors"] = 100  # more cuts than the client retries
    with pytest.raises(DownloadError, match="interrupted"):
        fetch(fake_hub, source, tmp_path, repo=repo)
    out = tmp_path / "out"
    assert not (out / "model.safetensors").exists()  # at most a *.incomplete, never the file
    assert not (out / SOURCE_MANIFEST).exists()
    assert (out / "config.json").is_file()

    fake_hub.hub.drop.clear()
    fake_hub.hub.log.clear()
    result = fetch(fake_hub, source, tmp_path, repo=repo)
    assert (result.path / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert fake_hub.hub.gets("config.json") == 0  # finished files are reused
    assert not list(out.rglob("*.incomplete"))


def test_rerun_reuses_verified_files(fake_hub, tmp_path):
    first = fetch(fake_hub, "hf", tmp_path)
    fake_hub.hub.log.clear()
    second = fetch(fake_hub, "hf", tmp_path)
    assert second.files == first.files
    assert fake_hub.hub.gets("/resolve/") == 0


def offline(source, repo, **kwargs):
    return download(repo, source=source, endpoint=dead_endpoint(), progress=False, **kwargs)


@pytest.mark.parametrize("where", ["local_dir", "cache"])
@pytest.mark.parametrize("source", SOURCES)
def test_small_file_corrupted_in_transit_is_refused_on_rerun_and_offline(fake_hub, source, where, tmp_path):
    """tokenizer.json is a small (non-LFS) file: on the HF side only its git blob sha1 can catch
    a flipped byte of the same length (huggingface_hub checks sizes only)."""
    repo, files = fresh_repo(fake_hub)
    kwargs = {"local_dir": tmp_path / "out"} if where == "local_dir" else {}
    fake_hub.hub.corrupt.add("tokenizer.json")
    for _ in range(2):  # the first run and a rerun against the same bad transfer
        with pytest.raises(IntegrityError, match="checksum mismatch.*tokenizer.json"):
            download(repo, source=source, endpoint=fake_hub.url, progress=False, **kwargs)
    with pytest.raises(DownloadError, match="cannot reach"):  # no verified copy to fall back to
        offline(source, repo, **kwargs)
    if where == "local_dir":
        assert not (tmp_path / "out" / "tokenizer.json").exists() and not (tmp_path / "out" / SOURCE_MANIFEST).exists()
    fake_hub.hub.corrupt.clear()
    result = download(repo, source=source, endpoint=fake_hub.url, progress=False, **kwargs)
    assert (result.path / "tokenizer.json").read_bytes() == files["tokenizer.json"]  # not the damaged copy
    assert offline(source, repo, **kwargs).offline


@pytest.mark.parametrize("where", ["local_dir", "cache"])
@pytest.mark.parametrize("source", SOURCES)
def test_file_tampered_after_a_verified_download_is_refused(fake_hub, source, where, tmp_path, capsys):
    repo, files = fresh_repo(fake_hub)
    kwargs = {"local_dir": tmp_path / "out"} if where == "local_dir" else {}
    first = download(repo, source=source, endpoint=fake_hub.url, progress=False, **kwargs)
    for name in ("model.safetensors", "tokenizer.json"):  # same length, one byte changed
        path = first.path / name
        data = path.read_bytes()
        path.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    with pytest.raises(IntegrityError, match="changed after it was downloaded and verified"):
        offline(source, repo, **kwargs)
    fake_hub.hub.log.clear()
    reports = []
    with listen(lambda event: reports.append(event.message)):
        again = download(repo, source=source, endpoint=fake_hub.url, progress=False, **kwargs)
    assert any("does not match the hub's checksum; fetching it again" in line for line in reports)
    assert "does not match" not in capsys.readouterr().err  # the API reports to its logger, not to the terminal
    for name in ("model.safetensors", "tokenizer.json"):
        assert (again.path / name).read_bytes() == files[name]
        assert fake_hub.hub.gets(name) >= 1  # fetched anew, not kept
    assert fake_hub.hub.gets("config.json") == 0  # untouched files are reused
    assert offline(source, repo, **kwargs).offline  # verified again: the offline fallback works
