"""The upload side of the loopback hub (``fakehub.FakeHub``): what huggingface_hub's
``create_repo`` / ``create_branch`` / ``create_commit`` call, so the real client pushes end to end
and a ``quantkit download`` of the same repo reads back what was pushed.

- ``POST /api/repos/create``: 401 for an unknown token, 403 outside the token's namespaces,
  409 when the repo exists. ``GET /api/models/{repo}`` (what create_repo checks after a 403).
- ``POST /api/validate-yaml`` (the README check before a commit).
- ``POST /api/models/{repo}/preupload/{rev}``: LFS for weights, regular otherwise, with the
  remote oid of a file already at ``rev`` (unchanged files are left out of the commit).
- ``POST /{repo}.git/info/lfs/objects/batch``: basic transfer; no upload action for an object
  already stored (how an interrupted push resumes). ``PUT /lfs/{oid}``: the object, checked
  against its sha256; ``drop_puts`` cuts the next N uploads off half-way.
- ``POST /api/models/{repo}/commit/{rev}`` (NDJSON): a new commit of the branch; ``quota`` bytes
  per namespace refuse a commit that would exceed it. ``POST /api/models/{repo}/branch/{name}``.

ModelScope (what modelscope_hub's ``create_repo`` / ``upload_folder`` call): ``POST /api/v1/login``,
``GET /api/v1/models/{repo}``, ``POST /api/v1/models``, ``POST /api/v1/repos/models/{repo}/info/lfs/
objects/batch`` (the same LFS store and ``PUT /lfs/{oid}``) and ``POST /api/v1/repos/models/{repo}/
commit/{rev}`` (inline base64 for small files, sha256 for LFS ones).

Uploads run with xet off (``HF_HUB_DISABLE_XET``): the xet CAS cannot exist here; the LFS path
is huggingface_hub's own for hubs without it.
"""

import base64
import hashlib
import json
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import pytest
from fakehub import LFS_SUFFIXES, FakeHub, FakeRepo, _make_handler, git_blob_sha1

WRITE_TOKEN = "hf_write_token_acme"


@dataclass
class UploadState:
    tokens: dict[str, set[str]] = field(default_factory=dict)  # token -> namespaces it may create in / write to
    objects: dict[str, bytes] = field(default_factory=dict)  # LFS store: sha256 -> bytes
    quota: dict[str, int] = field(default_factory=dict)  # namespace -> max bytes of its repos
    drop_puts: int = 0
    puts: list[str] = field(default_factory=list)  # oids whose upload completed
    commits: list[dict] = field(default_factory=list)  # header of every commit made


class UploadHub(FakeHub):
    def __init__(self):
        super().__init__()
        self.upload = UploadState()
        self._server.RequestHandlerClass = _upload_handler(self, _make_handler(self))

    def reset(self) -> None:
        self.upload.drop_puts = 0
        self.upload.objects.clear()  # each test uploads afresh (the repos keep their bytes)
        self.log.clear()
        self.upload.quota.clear()
        self.upload.puts.clear()
        self.upload.commits.clear()


def _upload_handler(hub: UploadHub, base):
    class Handler(base):
        def _token(self):
            auth = self.headers.get("Authorization", "")
            return auth[7:] if auth.startswith("Bearer ") else None

        def _may_write(self, repo_id: str) -> bool | None:
            """None: no valid token; False: valid but not for this namespace."""
            token = self._token()
            if token not in hub.upload.tokens:
                return None
            return repo_id.split("/")[0] in hub.upload.tokens[token]

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _auth_failed(self, repo_id: str) -> bool:
            allowed = self._may_write(repo_id)
            if allowed is None:
                self._hf_error(401, "Unauthorized", "Invalid credentials in Authorization header")
                return True
            if not allowed:
                self._hf_error(403, "Forbidden", f"You don't have the rights to write to {repo_id}")
                return True
            return False

        def do_GET(self):
            path = urlsplit(self.path).path.strip("/").split("/")
            if path[:3] == ["api", "v1", "models"] and len(path) == 5:  # ModelScope's repo info
                hub.log.append((self.command, self.path))
                repo = hub.repos.get(f"{path[3]}/{path[4]}")
                if repo is None or (repo.private and not self._authorized(repo)):
                    return self._ms_error(404, f"model {path[3]}/{path[4]} not exists")
                return self._json(
                    200,
                    {
                        "Code": 200,
                        "Success": True,
                        "Data": {"Path": path[3], "Name": path[4], "Visibility": 1 if repo.private else 5},
                    },
                )
            if path[:2] == ["api", "models"] and len(path) == 4:  # repo_info without a revision
                hub.log.append((self.command, self.path))
                repo = hub.repos.get(f"{path[2]}/{path[3]}")
                if repo is None or (repo.private and not self._authorized(repo)):
                    return self._hf_error(404 if repo is None else 401, "RepoNotFound", "Repository Not Found")
                sha = repo.branches.get("main")
                return self._json(200, {"id": f"{path[2]}/{path[3]}", "sha": sha, "private": repo.private})
            return super().do_GET()

        def do_POST(self):
            hub.log.append((self.command, self.path))
            segments = urlsplit(self.path).path.strip("/").split("/")
            body = self._body()
            if segments[:2] == ["api", "v1"]:
                return self._ms_post(segments[2:], json.loads(body or b"{}"))
            if segments == ["api", "repos", "create"]:
                return self._create(json.loads(body))
            if segments == ["api", "validate-yaml"]:
                return self._json(200, {"errors": [], "warnings": []})
            if segments[:2] == ["api", "models"] and len(segments) >= 6:
                repo_id, kind, rev = f"{segments[2]}/{segments[3]}", segments[4], unquote("/".join(segments[5:]))
                if kind == "preupload":
                    return self._preupload(repo_id, rev, json.loads(body))
                if kind == "commit":
                    return self._commit(repo_id, rev, body)
                if kind == "branch":
                    return self._branch(repo_id, rev)
            if len(segments) == 6 and segments[1].endswith(".git") and segments[2:] == ["info", "lfs", "objects", "batch"]:
                return self._batch(f"{segments[0]}/{segments[1][:-4]}", json.loads(body))
            self._send(404, b"not found")

        def do_PUT(self):
            hub.log.append((self.command, self.path))
            segments = urlsplit(self.path).path.strip("/").split("/")
            if segments[:1] != ["lfs"] or len(segments) != 2:
                return self._send(404, b"not found")
            oid, size = segments[1], int(self.headers.get("Content-Length") or 0)
            if hub.upload.drop_puts > 0:
                hub.upload.drop_puts -= 1
                self.rfile.read(size // 2)  # half of it arrives, then the line goes dead
                self.close_connection = True
                import socket

                self.connection.shutdown(socket.SHUT_RDWR)
                return
            data = self.rfile.read(size)
            if hashlib.sha256(data).hexdigest() != oid:
                return self._hf_error(400, "BadRequest", "sha256 does not match the oid")
            hub.upload.objects[oid] = data
            hub.upload.puts.append(oid)
            self._send(200, b"")

        # -- the endpoints -----------------------------------------------------------------------
        def _create(self, payload):
            repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
            allowed = self._may_write(repo_id)
            if allowed is None:
                return self._hf_error(401, "Unauthorized", "Invalid credentials in Authorization header")
            if repo_id in hub.repos:
                return self._json(409, {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"})
            if not allowed:
                return self._hf_error(
                    403, "Forbidden", f"You don't have the rights to create a model under the namespace {repo_id.split('/')[0]}"
                )
            private = payload.get("visibility") == "private" or payload.get("private") is True
            hub.repos[repo_id] = FakeRepo(token=self._token() if private else None, private=private)
            hub.commit(repo_id, {}, branches=("main",))
            self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

        def _repo_files(self, repo_id, rev):
            repo = hub.repos.get(repo_id)
            sha = repo.resolve(rev) if repo else None
            return repo, (repo.commits[sha] if sha else None)

        def _preupload(self, repo_id, rev, payload):
            repo, files = self._repo_files(repo_id, rev)
            if repo is None:
                return self._hf_error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}")
            if self._auth_failed(repo_id):
                return
            answer = []
            for item in payload["files"]:
                lfs = item["path"].endswith(LFS_SUFFIXES) or item["size"] > 10 << 20
                existing = (files or {}).get(item["path"])
                oid = None if existing is None else hashlib.sha256(existing).hexdigest() if lfs else git_blob_sha1(existing)
                answer.append(
                    {"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
                )
            self._json(200, {"files": answer, "commitOid": repo.resolve(rev)})

        def _batch(self, repo_id, payload):
            if repo_id not in hub.repos:
                return self._hf_error(404, "RepoNotFound", "Repository not found")
            if self._auth_failed(repo_id):
                return
            objects = []
            for obj in payload["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in hub.upload.objects:
                    entry["actions"] = {"upload": {"href": f"{hub.url}/lfs/{obj['oid']}"}}
                objects.append(entry)
            self._send(
                200,
                json.dumps({"transfer": "basic", "objects": objects}).encode(),
                {"Content-Type": "application/vnd.git-lfs+json"},
            )

        def _commit(self, repo_id, rev, body):
            repo, files = self._repo_files(repo_id, rev)
            if repo is None:
                return self._hf_error(404, "RepoNotFound", "Repository not found")
            if self._auth_failed(repo_id):
                return
            if files is None:
                return self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            new, header = dict(files), {}
            for line in body.decode().splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "header":
                    header = value
                elif item["key"] == "file":
                    new[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "lfsFile":
                    if value["oid"] not in hub.upload.objects:
                        return self._hf_error(400, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                    new[value["path"]] = hub.upload.objects[value["oid"]]
                elif item["key"] == "deletedFile":
                    new.pop(value["path"], None)
            namespace = repo_id.split("/")[0]
            if namespace in hub.upload.quota:
                others = [r for rid, r in hub.repos.items() if rid.split("/")[0] == namespace and rid != repo_id]
                used = sum(len(d) for r in others for d in r.commits[r.branches["main"]].values())
                used += sum(map(len, new.values()))
                if used > hub.upload.quota[namespace]:
                    return self._hf_error(403, "Forbidden", f"Storage quota exceeded for {namespace}: upgrade your plan")
            sha = hub.commit(repo_id, new, branches=(rev,))
            hub.upload.commits.append({"repo": repo_id, "revision": rev, **header})
            self._json(
                200, {"success": True, "commitOid": sha, "commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "pullRequestUrl": None}
            )

        # -- ModelScope ------------------------------------------------------------------------
        def _ms_auth_failed(self, repo_id: str) -> bool:
            allowed = self._may_write(repo_id)
            if allowed is None:
                self._ms_error(401, "Unauthorized: invalid access token")
                return True
            if not allowed:
                self._ms_error(403, f"Permission denied: no write access to {repo_id}")
                return True
            return False

        def _ms_post(self, rest, payload):
            if rest == ["login"]:
                if payload.get("AccessToken") not in hub.upload.tokens:
                    return self._ms_error(401, "Unauthorized: invalid access token")
                return self._json(200, {"Code": 200, "Success": True, "Data": {"AccessToken": "git-token", "Username": "tester"}})
            if rest == ["models"]:
                repo_id = f"{payload.get('Path')}/{payload.get('Name')}"
                if self._ms_auth_failed(repo_id):
                    return
                if repo_id in hub.repos:
                    return self._ms_error(400, f"model {repo_id} already exists")
                private = payload.get("Visibility") == 1
                hub.repos[repo_id] = FakeRepo(token=self._token() if private else None, private=private)
                hub.commit(repo_id, {}, branches=("master",))
                return self._json(200, {"Code": 200, "Success": True, "Data": {"Path": repo_id}})
            if rest[:2] == ["repos", "models"] and len(rest) >= 5:
                repo_id = f"{rest[2]}/{rest[3]}"
                if repo_id not in hub.repos:
                    return self._ms_error(404, f"model {repo_id} not exists")
                if self._ms_auth_failed(repo_id):
                    return
                if rest[4:] == ["info", "lfs", "objects", "batch"]:
                    objects = [
                        {
                            "oid": o["oid"],
                            "size": o["size"],
                            "actions": {}
                            if o["oid"] in hub.upload.objects
                            else {"upload": {"href": f"{hub.url}/lfs/{o['oid']}"}},
                        }
                        for o in payload["objects"]
                    ]
                    return self._json(200, {"Code": 200, "Success": True, "Data": {"objects": objects}})
                if rest[4] == "commit" and len(rest) >= 6:
                    return self._ms_commit(repo_id, unquote("/".join(rest[5:])), payload)
            self._ms_error(404, "not found")

        def _ms_commit(self, repo_id, rev, payload):
            repo = hub.repos[repo_id]
            sha = repo.resolve(rev) or repo.resolve("master")  # a new branch starts from master
            new = dict(repo.commits[sha]) if sha else {}
            for action in payload.get("actions", []):
                if action["action"] == "delete":
                    new.pop(action["path"], None)
                elif action.get("type") == "lfs":
                    if action["sha256"] not in hub.upload.objects:
                        return self._ms_error(400, f"LFS object {action['sha256']} was never uploaded")
                    new[action["path"]] = hub.upload.objects[action["sha256"]]
                else:
                    new[action["path"]] = base64.b64decode(action.get("content") or "")
            namespace = repo_id.split("/")[0]
            if namespace in hub.upload.quota and sum(map(len, new.values())) > hub.upload.quota[namespace]:
                return self._ms_error(403, f"Storage quota exceeded for {namespace}")
            sha = hub.commit(repo_id, new, branches=(rev,))
            hub.upload.commits.append({"repo": repo_id, "revision": rev, "summary": payload.get("commit_message")})
            self._json(200, {"Code": 200, "Success": True, "Data": {"CommitId": sha}})

        def _branch(self, repo_id, name):
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._hf_error(404, "RepoNotFound", "Repository not found")
            if self._auth_failed(repo_id):
                return
            if name in repo.branches:
                return self._hf_error(409, "Conflict", f"Branch {name} already exists")
            repo.branches[name] = repo.branches["main"]
            self._json(200, {})

    return Handler


@pytest.fixture(scope="session")
def upload_hub_session():
    hub = UploadHub().start()
    hub.upload.tokens[WRITE_TOKEN] = {"acme"}
    hub.upload.tokens["hf_read_elsewhere"] = {"someone-else"}
    yield hub
    hub.stop()


@pytest.fixture
def upload_hub(upload_hub_session, monkeypatch):
    """The upload hub with no faults, xet off (in this process and in subprocesses)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    upload_hub_session.reset()
    yield upload_hub_session
    upload_hub_session.reset()
