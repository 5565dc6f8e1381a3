"""A small Hugging Face Hub on 127.0.0.1 for the real ``huggingface_hub`` client (legacy LFS path, no Xet).

It serves what publishing and ``snapshot_download`` call: repo creation, repo info per revision, README YAML
validation, preupload (upload mode + current oid per file, which drives the client's no-op detection), the LFS
batch API with single-PUT uploads, ndjson commits (``parentCommit`` enforced; a commit applies whole or not at
all), recursive tree listings, and ``resolve`` HEAD/GET with the headers ``hf_hub_download`` reads. Faults are
injected per endpoint with ``fail(kind, status, times)``. The state is plain data for tests to assert on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt")
LFS_THRESHOLD = 10 * 1024 * 1024


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class Blob:
    size: int
    content: bytes | None = None  # regular file
    lfs_oid: str | None = None  # LFS file: sha256 of the content, stored in the LFS store

    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.lfs_oid}\nsize {self.size}\n".encode()

    @property
    def oid(self) -> str:
        """What the preupload endpoint reports: the git blob sha1 of a regular file, the sha256 of an LFS one."""
        return self.lfs_oid or git_blob_oid(self.content or b"")

    @property
    def blob_id(self) -> str:
        return git_blob_oid(self.pointer() if self.lfs_oid else (self.content or b""))


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def at(self, revision: str) -> Commit | None:
        if revision == "main":
            return self.head
        return next((c for c in self.commits if c.oid == revision), None)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class FakeHub:
    def __init__(self, token: str | None = None):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.lfs_puts: list[str] = []
        self.authorizations: set[str | None] = set()
        self.commit_headers: list[dict[str, Any]] = []
        # Called at the start of every commit request: lets a test land another commit first (a concurrent writer).
        self.before_commit: Callable[[], None] | None = None
        self._faults: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def push(self, repo_id: str, files: dict[str, bytes], message: str = "someone else's commit") -> str:
        """Commit regular files directly, as another writer would; returns the new head."""
        lines = [{"key": "header", "value": {"summary": message}}]
        lines += [
            {"key": "file", "value": {"path": p, "content": base64.b64encode(c).decode()}} for p, c in files.items()
        ]
        return self._apply(self._repo(repo_id), "main", lines)["commitOid"]

    def fail(self, kind: str, status: int = 500, times: int = 1) -> None:
        """The next ``times`` requests of ``kind`` (create, preupload, batch, lfs_put, commit, tree, resolve)
        answer ``status``."""
        self._faults.setdefault(kind, []).extend([status] * times)

    def faults_left(self, kind: str) -> int:
        return len(self._faults.get(kind, []))

    def _fault(self, kind: str) -> None:
        queue = self._faults.get(kind)
        if queue:
            raise HubError(queue.pop(0), f"injected failure of {kind}")

    def _repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self.repos[repo_id]

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.at(unquote(revision))
        if commit is None:
            raise HubError(404, f"Revision {revision} not found", "RevisionNotFound")
        return commit

    def create_repo(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._fault("create")
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if repo_id in self.repos:
            # The Hub names the existing repository in the conflict; the client returns that URL.
            raise HubError(409, "You already created this model repo", url=f"{self.endpoint}/{repo_id}")
        repo = Repo(
            repo_id, private=payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        )
        # Like the Hub: a new repository starts with one commit holding the LFS rules.
        gitattributes = b"".join(b"*%s filter=lfs diff=lfs merge=lfs -text\n" % s.encode() for s in LFS_SUFFIXES)
        files = {".gitattributes": Blob(size=len(gitattributes), content=gitattributes)}
        repo.commits.append(Commit(_commit_oid(None, "initial commit", files), None, "initial commit", files))
        self.repos[repo_id] = repo
        return {"url": f"{self.endpoint}/{repo_id}", "name": repo_id, "id": repo_id}

    def repo_info(self, repo_id: str, revision: str) -> dict[str, Any]:
        repo = self._repo(repo_id)
        commit = self._commit(repo, revision)
        return {
            "id": repo_id,
            "modelId": repo_id,
            "sha": commit.oid,
            "private": repo.private,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }

    def preupload(self, repo_id: str, revision: str, payload: dict[str, Any]) -> dict[str, Any]:
        self._fault("preupload")
        head = self._commit(self._repo(repo_id), revision)
        files = []
        for f in payload["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_THRESHOLD
            current = head.files.get(f["path"])
            files.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": current.oid if current else None,
                }
            )
        return {"files": files, "commitOid": head.oid}

    def lfs_batch(self, repo_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        self._fault("batch")
        self._repo(repo_id)
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs:
                entry["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-storage/{obj['oid']}", "expires_in": 900}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def lfs_put(self, oid: str, body: bytes) -> None:
        self._fault("lfs_put")
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"LFS object {oid}: content does not match its sha256")
        with self._lock:
            self.lfs[oid] = body
            self.lfs_puts.append(oid)

    def commit(self, repo_id: str, revision: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
        self._fault("commit")
        repo = self._repo(repo_id)
        self.commit_headers.append(lines[0]["value"])
        if self.before_commit is not None:
            self.before_commit()
        return self._apply(repo, revision, lines)

    def _apply(self, repo: Repo, revision: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
        header = lines[0]["value"]
        with self._lock:
            head = self._commit(repo, revision)
            if header.get("parentCommit") not in (None, head.oid):
                raise HubError(412, f"parentCommit {header['parentCommit']} is not the head {head.oid} of {revision}")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    content = base64.b64decode(value["content"])
                    files[value["path"]] = Blob(size=len(content), content=content)
                elif key == "lfsFile":
                    if value["oid"] not in self.lfs:
                        raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    files[value["path"]] = Blob(size=value["size"], lfs_oid=value["oid"])
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: b for p, b in files.items() if not p.startswith(prefix)}
                else:
                    raise HubError(400, f"unsupported commit operation {key}")
            oid = _commit_oid(head.oid, header["summary"], files)
            repo.commits.append(Commit(oid, head.oid, header["summary"], files))
        return {"success": True, "commitOid": oid, "commitUrl": f"{self.endpoint}/{repo.repo_id}/commit/{oid}"}

    def tree(self, repo_id: str, revision: str, path: str) -> list[dict[str, Any]]:
        self._fault("tree")
        commit = self._commit(self._repo(repo_id), revision)
        prefix = path.rstrip("/") + "/" if path else ""
        entries = []
        for name, blob in sorted(commit.files.items()):
            if not name.startswith(prefix):
                continue
            entry: dict[str, Any] = {"type": "file", "path": name, "size": blob.size, "oid": blob.blob_id}
            if blob.lfs_oid:
                entry["lfs"] = {"oid": blob.lfs_oid, "size": blob.size, "pointerSize": len(blob.pointer())}
            entries.append(entry)
        return entries

    def resolve(self, repo_id: str, revision: str, path: str) -> tuple[Commit, Blob, bytes]:
        self._fault("resolve")
        commit = self._commit(self._repo(repo_id), revision)
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, f"Entry {path} not found", "EntryNotFound")
        return commit, blob, self.lfs[blob.lfs_oid] if blob.lfs_oid else (blob.content or b"")


def _commit_oid(parent: str | None, message: str, files: dict[str, Blob]) -> str:
    tree = json.dumps([parent, message, sorted((p, b.blob_id) for p, b in files.items())])
    return hashlib.sha1(tree.encode()).hexdigest()


def _split_repo(parts: list[str]) -> tuple[str, list[str]]:
    return f"{parts[0]}/{parts[1]}", parts[2:]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, data: Any, status: int = 200) -> None:
            self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

        def _check_auth(self) -> None:
            given = self.headers.get("Authorization")
            hub.authorizations.add(given)
            if hub.token is not None and given != f"Bearer {hub.token}":
                raise HubError(401, "Invalid credentials in Authorization header")

        def _dispatch(self, method: str) -> None:
            body = self._body() if method in ("POST", "PUT") else b""
            path = urlsplit(self.path).path
            hub.requests.append((method, path))
            try:
                self._route(method, [unquote(p) for p in path.strip("/").split("/")], body)
            except HubError as err:
                headers = {"Content-Type": "application/json", "X-Error-Message": err.message}
                if err.code:
                    headers["X-Error-Code"] = err.code
                self._send(err.status, json.dumps({"error": err.message, **err.extra}).encode(), headers)

        def _route(self, method: str, parts: list[str], body: bytes) -> None:
            if parts[0] == "lfs-storage" and method == "PUT":
                hub.lfs_put(parts[1], body)
                return self._send(200)
            self._check_auth()
            if parts[:3] == ["api", "repos", "create"]:
                return self._json(hub.create_repo(json.loads(body)))
            if parts[:2] == ["api", "validate-yaml"]:
                return self._validate_yaml(json.loads(body)["content"])
            if parts[:2] == ["api", "models"]:
                repo_id, rest = _split_repo(parts[2:])
                if not rest:
                    return self._json(hub.repo_info(repo_id, "main"))
                if rest[0] == "revision":
                    return self._json(hub.repo_info(repo_id, rest[1]))
                if rest[0] == "preupload":
                    return self._json(hub.preupload(repo_id, rest[1], json.loads(body)))
                if rest[0] == "commit":
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                    return self._json(hub.commit(repo_id, rest[1], lines))
                if rest[0] == "tree":
                    return self._json(hub.tree(repo_id, rest[1], "/".join(rest[2:])))
            if len(parts) >= 4 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
                return self._json(hub.lfs_batch(f"{parts[0]}/{parts[1].removesuffix('.git')}", json.loads(body)))
            if len(parts) >= 5 and parts[2] == "resolve":
                repo_id, rest = _split_repo(parts)
                commit, blob, content = hub.resolve(repo_id, rest[1], "/".join(rest[2:]))
                headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{blob.blob_id}"'}
                if blob.lfs_oid:
                    headers.update({"X-Linked-Etag": f'"{blob.lfs_oid}"', "X-Linked-Size": str(blob.size)})
                return self._send(200, content, headers)
            raise HubError(404, f"fake hub has no route for {method} /{'/'.join(parts)}")

        def _validate_yaml(self, content: str) -> None:
            errors = []
            if content.startswith("---\n"):
                try:
                    yaml.safe_load(content[4 : content.index("\n---", 4)])
                except yaml.YAMLError as err:
                    errors.append({"message": str(err)})
            self._json({"errors": errors, "warnings": []}, status=400 if errors else 200)

    return Handler
