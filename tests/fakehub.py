"""A loopback fake of the Hugging Face Hub and ModelScope, so the real ``snapshot_download`` of
both libraries runs end to end with no network.

One threaded ``http.server`` on 127.0.0.1, port 0, serves the same fixture repos over both
protocols (the endpoints and headers the clients were measured to use, see issue 2):

- HF: ``GET /api/models/{repo}/revision/{rev}``, ``GET /api/models/{repo}/tree/{rev}``,
  ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``,
  ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, ``Range`` -> 206, ``X-Error-Code`` on errors.
- ModelScope: ``GET /api/v1/models/{repo}/revisions``, ``.../repo/files`` (with ``Sha256``) and
  ``.../repo?FilePath=`` (the file itself); everything else answers 404.

Faults are injected per file path: ``corrupt`` (flip one byte, same length), ``drop`` (close the
connection half-way, N times). A repo made with ``token=`` answers 401 without that bearer token.
"""

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")  # served as LFS files on the HF side


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: bytes}
    branches: dict[str, str] = field(default_factory=dict)  # name -> sha
    tags: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # when set, files need "Bearer <token>" (a gated repo) ...
    private: bool = False  # ... and so does every API call, which then says RepoNotFound (as the hub does)

    def resolve(self, rev: str) -> str | None:
        if rev in self.commits:
            return rev
        return self.branches.get(rev) or self.tags.get(rev)


class FakeHub:
    def __init__(self):
        self.repos: dict[str, FakeRepo] = {}
        self.corrupt: set[str] = set()
        self.drop: dict[str, int] = {}  # path -> how many more GETs to cut short
        self.log: list[tuple[str, str]] = []  # (method, path) of every request
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        branches=("main", "master"),
        tags=(),
        token: str | None = None,
        private: bool = False,
    ) -> str:
        """Add a commit holding exactly ``files``; point ``branches`` and ``tags`` at it."""
        repo = self.repos.setdefault(repo_id, FakeRepo())
        if token is not None:
            repo.token, repo.private = token, private
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + files[name])
        sha = digest.hexdigest()
        repo.commits[sha] = dict(files)
        for name in branches:
            repo.branches[name] = sha
        for name in tags:
            repo.tags[name] = sha
        return sha

    def gets(self, path_part: str) -> int:
        """How many GET requests asked for a URL containing ``path_part``."""
        return sum(1 for method, path in self.log if method == "GET" and path_part in path)


def _make_handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_HEAD(self):
            self._route(head=True)

        def do_GET(self):
            self._route(head=False)

        # -- plumbing -------------------------------------------------------------------------
        def _send(self, status, body=b"", headers=None, head=False):
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, str(value))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, status, obj, headers=None, head=False):
            self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}, head)

        def _hf_error(self, status, code, message, head=False):
            self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message}, head)

        def _ms_error(self, status, message):
            self._json(status, {"Code": status, "Message": message, "Success": False, "RequestId": "fake"})

        def _authorized(self, repo: FakeRepo) -> bool:
            return repo.token is None or self.headers.get("Authorization") == f"Bearer {repo.token}"

        def _route(self, head):
            hub.log.append((self.command, self.path))
            parts = urlsplit(self.path)
            segments = parts.path.strip("/").split("/")
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if segments[:3] == ["api", "v1", "models"] and len(segments) >= 6:
                return self._modelscope(f"{segments[3]}/{segments[4]}", segments[5:], query)
            if segments[:2] == ["api", "models"] and len(segments) >= 6:
                return self._hf_api(f"{segments[2]}/{segments[3]}", segments[4], unquote(segments[5]), head)
            if len(segments) >= 5 and segments[2] == "resolve":
                path = unquote("/".join(segments[4:]))
                return self._hf_resolve(f"{segments[0]}/{segments[1]}", unquote(segments[3]), path, head)
            self._send(404, b"not found", head=head)

        def _lookup_hf(self, repo_id, rev, head, api=False):
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self._authorized(repo)):
                status = 401 if repo is not None else 404
                self._hf_error(status, "RepoNotFound", f"Repository Not Found for url: {self.path}", head)
                return None, None
            if not api and not self._authorized(repo):
                self._hf_error(401, "GatedRepo", f"Access to model {repo_id} is restricted.", head)
                return None, None
            sha = repo.resolve(rev)
            if sha is None:
                self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
                return None, None
            return repo, sha

        # -- Hugging Face ----------------------------------------------------------------------
        def _hf_api(self, repo_id, kind, rev, head):
            repo, sha = self._lookup_hf(repo_id, rev, head, api=True)  # a gated repo's listing is public
            if repo is None:
                return
            files = repo.commits[sha]
            if kind == "revision":
                return self._json(
                    200,
                    {
                        "id": repo_id,
                        "modelId": repo_id,
                        "sha": sha,
                        "private": False,
                        "gated": bool(repo.token),
                        "disabled": False,
                        "tags": [],
                        "siblings": [{"rfilename": p} for p in sorted(files)],
                    },
                    head=head,
                )
            if kind == "tree":
                return self._json(200, _hf_tree(files), head=head)
            self._send(404, b"not found", head=head)

        def _hf_resolve(self, repo_id, rev, path, head):
            repo, sha = self._lookup_hf(repo_id, rev, head)
            if repo is None:
                return
            data = repo.commits[sha].get(path)
            if data is None:
                return self._hf_error(404, "EntryNotFound", f"{path} does not exist at {rev}", head)
            headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            if path.endswith(LFS_SUFFIXES):
                sha256 = hashlib.sha256(data).hexdigest()
                headers.update({"ETag": f'"{sha256}"', "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": len(data)})
            else:
                headers["ETag"] = f'"{git_blob_sha1(data)}"'
            self._file(path, data, headers, head)

        # -- ModelScope ------------------------------------------------------------------------
        def _modelscope(self, repo_id, rest, query):
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._ms_error(404, f"model {repo_id} not exists")
            if not self._authorized(repo):
                return self._ms_error(401, "authentication required")
            if rest == ["revisions"]:

                def detail(refs):
                    return [{"Revision": name, "CommitId": sha, "CreatedAt": 1700000000} for name, sha in refs.items()]

                return self._json(
                    200,
                    {
                        "Code": 200,
                        "Success": True,
                        "Data": {"RevisionMap": {"Branches": detail(repo.branches), "Tags": detail(repo.tags)}},
                    },
                )
            rev = query.get("Revision") or "master"
            sha = repo.resolve(rev)
            if sha is None:
                return self._ms_error(404, f"revision {rev} not exists")
            files = repo.commits[sha]
            if rest == ["repo", "files"]:
                listing = [
                    {
                        "Name": p.rsplit("/", 1)[-1],
                        "Path": p,
                        "Type": "blob",
                        "Size": len(d),
                        "Sha256": hashlib.sha256(d).hexdigest(),
                        "Revision": sha,
                        "CommittedDate": 1700000000,
                    }
                    for p, d in sorted(files.items())
                ]
                return self._json(200, {"Code": 200, "Success": True, "Data": {"Files": listing}})
            if rest == ["repo"] and "FilePath" in query:
                path = query["FilePath"]
                if path not in files:
                    return self._ms_error(404, f"file {path} not exists")
                return self._file(
                    path, files[path], {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}, head=False
                )
            self._ms_error(404, "not found")

        # -- file bodies with faults -----------------------------------------------------------
        def _file(self, path, data, headers, head):
            if path in hub.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start, status = 0, 200
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                first, _, last = ranged[6:].partition("-")
                start = int(first or 0)
                end = int(last) if last else len(data) - 1
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data, status = data[start : end + 1], 206
            if head or not hub.drop.get(path):
                return self._send(status, data, headers, head)
            hub.drop[path] -= 1
            # Announce the full length, send half, then hang up: an interrupted transfer.
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, str(value))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True

    return Handler


def _hf_tree(files: dict[str, bytes]) -> list[dict]:
    entries, folders = [], set()
    for path, data in sorted(files.items()):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folders.add("/".join(parts[:i]))
        entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
        if path.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        entries.append(entry)
    return [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in sorted(folders)] + entries


# -- fixture repos and pytest fixtures (imported by the download tests) ---------------------------
TOKEN = "hf_test_token"
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "torch_dtype": "bfloat16",
    "tie_word_embeddings": False,
}


def tiny_llama_files(layers: int = 2, **extra: bytes) -> dict[str, bytes]:
    """A tiny llama's config, a tokenizer config and a real (small) safetensors file."""
    import numpy as np
    from safetensors.numpy import save

    weights = {f"model.layers.{i}.mlp.up_proj.weight": np.full((256, 128), i, dtype=np.float32) for i in range(layers)}
    files = {
        "config.json": json.dumps({**TINY_LLAMA, "num_hidden_layers": layers}).encode(),
        "tokenizer_config.json": json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": "{{ messages }}"}
        ).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}).encode(),
        "model.safetensors": save(weights),
    }
    files.update(extra)
    return files


@dataclass
class Fixtures:
    hub: FakeHub
    url: str
    commits: dict[str, str]  # "v1.0" / "dev" / "main" -> commit sha of acme/tiny-llama
    files: dict[str, dict[str, bytes]]  # same keys -> files of that commit


@pytest.fixture(scope="session")
def fake_hub_session():
    hub = FakeHub().start()
    files = {
        "v1.0": tiny_llama_files(layers=1),
        "dev": tiny_llama_files(layers=2, **{"extra/notes.md": b"# dev branch\n"}),
        "main": tiny_llama_files(layers=2, **{"README.md": b"# tiny llama\n", "pytorch_model.bin": b"\x80\x04pickle" * 100}),
    }
    commits = {
        "v1.0": hub.commit("acme/tiny-llama", files["v1.0"], branches=(), tags=("v1.0",)),
        "dev": hub.commit("acme/tiny-llama", files["dev"], branches=("dev",)),
        "main": hub.commit("acme/tiny-llama", files["main"]),
    }
    hub.commit("acme/pickle-only", {"config.json": files["main"]["config.json"], "pytorch_model.bin": b"\x80\x04pickle" * 100})
    hub.commit("acme/gated", tiny_llama_files(layers=1), token=TOKEN)
    hub.commit("acme/private", tiny_llama_files(layers=1), token=TOKEN, private=True)
    hub.commit("acme/evil", {"config.json": b"{}", "../escape.txt": b"outside"})
    yield Fixtures(hub=hub, url=hub.url, commits=commits, files=files)
    hub.stop()


@pytest.fixture
def fake_hub(fake_hub_session):
    """The session's hub with no faults injected and an empty request log."""
    hub = fake_hub_session.hub
    hub.corrupt.clear()
    hub.drop.clear()
    hub.log.clear()
    yield fake_hub_session
    hub.corrupt.clear()
    hub.drop.clear()
