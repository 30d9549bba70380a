"""A local Hugging Face Hub stand-in: the HTTP endpoints `huggingface_hub` 2.x and `transformers` call.

Stdlib only (http.server in a thread), state in memory. Endpoints and headers follow the installed
huggingface_hub source (hf_api.py, _commit_api.py, lfs.py, file_download.py, utils/_http.py):

    POST /api/repos/create                               create_repo (409 if it exists)
    GET  /api/models/{repo}[/revision/{rev}]             repo_info / model_info
    POST /api/models/{repo}/preupload/{rev}              upload mode + remote oid per file
    POST /{repo}.git/info/lfs/objects/batch              LFS batch (basic transfer; no action if stored)
    PUT  /lfs-upload/{oid}                               LFS object upload (sha256 checked)
    POST /{repo}.git/info/lfs/objects/verify             LFS verify
    POST /api/models/{repo}/commit/{rev}                 NDJSON commit (header, file, lfsFile, deletedFile)
    GET  /api/models/{repo}/commits/{rev}                list_repo_commits
    POST /api/models/{repo}/paths-info/{rev}             get_paths_info
    GET  /api/models/{repo}/tree/{rev}[/{path}]          list_repo_tree
    HEAD|GET /{repo}/resolve/{rev}/{path}                downloads: X-Repo-Commit, ETag, X-Linked-Etag/-Size
    POST /api/models/{repo}/branch/{name}                create_branch (startingPoint)
    POST /api/models/{repo}/tag/{rev}                    create_tag
    GET  /api/models/{repo}/refs                         list_repo_refs
    GET  /api/whoami-v2, POST /api/validate-yaml

Dataset repos (create_repo(type="dataset")) answer the same routes under /api/datasets/… and /datasets/{repo}/…; they
are kept under the key "datasets/{repo}", which is also their URL path.
Errors carry the `X-Error-Code` header (RepoNotFound / RevisionNotFound / EntryNotFound) that
`hf_raise_for_status` maps to its exception classes. Tokens map to users; a user may write only its own namespace.
`fail(method, path_regex, status, times)` makes matching requests fail, to test resuming after a failure.
"""

import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".png", ".h5", ".msgpack", ".parquet", ".arrow")
LFS_MIN_SIZE = 10 * 1024 * 1024
DATASETS = "datasets/"  # the key and URL prefix of a dataset repo
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Entry:
    size: int
    sha256: str  # content hash (the blob store key)
    lfs: bool

    @property
    def git_oid(self) -> str:
        return git_blob_sha1(lfs_pointer(self.sha256, self.size)) if self.lfs else self._regular_oid

    _regular_oid: str = ""


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    files: dict[str, Entry]
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[str, str] = field(default_factory=dict)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


@dataclass
class FailRule:
    method: str
    pattern: re.Pattern
    status: int
    times: int


class HubState:
    def __init__(self, tokens: dict[str, str]):
        self.tokens = tokens  # token -> user name (the namespace it may write)
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.log: list[tuple[str, str, int]] = []
        self.fail_rules: list[FailRule] = []
        self.echo_token_in_errors = False
        self.lock = threading.RLock()

    # -- repository model -------------------------------------------------------------------------------------
    def new_commit(self, repo: Repo, parent: str | None, files: dict[str, Entry], title: str, message: str,
                   author: str) -> Commit:
        oid = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
        commit = Commit(oid, parent, title, message, author, files)
        repo.commits[oid] = commit
        return commit

    def store_regular(self, data: bytes) -> Entry:
        """A file committed inline (git blob, not LFS)."""
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[sha] = data
        return Entry(len(data), sha, False, _regular_oid=git_blob_sha1(data))

    def resolve(self, repo: Repo, rev: str) -> Commit:
        rev = unquote(rev)
        if rev.startswith("refs/heads/"):
            rev = rev[len("refs/heads/"):]
        oid = repo.branches.get(rev) or repo.tags.get(rev) or repo.prs.get(rev)
        if oid is None and rev in repo.commits:
            oid = rev
        if oid is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return repo.commits[oid]

    def snapshot(self, repo_id: str, rev: str = "main") -> dict[str, str]:
        """path -> sha256 of the content at `rev` (for test assertions)."""
        with self.lock:
            repo = self.repos[repo_id]
            return {p: e.sha256 for p, e in self.resolve(repo, rev).files.items()}

    def num_commits(self, repo_id: str) -> int:
        with self.lock:
            return len(self.repos[repo_id].commits)

    def fail(self, method: str, path_regex: str, status: int = 500, times: int = 1) -> None:
        self.fail_rules.append(FailRule(method, re.compile(path_regex), status, times))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "HubServer"

    def log_message(self, *args):  # keep test output quiet
        pass

    # -- plumbing ---------------------------------------------------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status: int, body=b"", headers: dict | None = None, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.state.log.append((self.command, self.path, status))

    def user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if token is None:
            return None
        if token not in self.state.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.state.tokens[token]

    def repo(self, repo_id: str, write: bool = False) -> Repo:
        user = self.user()
        repo = self.state.repos.get(repo_id)
        owner = repo_id.removeprefix(DATASETS).split("/")[0]
        if repo is None or (repo.private and user != owner):
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write:
            if user is None:
                raise HubError(401, "You must be authenticated to write", "RepoNotFound")
            if user != owner:
                raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def dispatch(self):
        parts = urlsplit(self.path)
        segments = parts.path.strip("/").split("/")  # still URL-quoted: a revision may be 'refs%2Fpr%2F1'
        query = parse_qs(parts.query)
        body = self.read_body() if self.command in ("POST", "PUT") else b""
        for rule in self.state.fail_rules:
            if rule.times > 0 and rule.method == self.command and rule.pattern.search(parts.path):
                rule.times -= 1
                return self.send(rule.status, {"error": "injected failure" + self.echo()})
        try:
            with self.state.lock:
                self.route(segments, query, body)
        except HubError as e:
            message = e.message + self.echo()
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            self.send(e.status, {"error": message, **e.extra}, headers)

    def echo(self) -> str:
        """A careless server quoting the credentials back (the client must still never show the token)."""
        return f" (Authorization: {self.headers.get('Authorization')})" if self.state.echo_token_in_errors else ""

    do_GET = do_POST = do_PUT = do_HEAD = lambda self: self.dispatch()  # noqa: E731

    # -- routes -----------------------------------------------------------------------------------------------
    def route(self, seg: list[str], query: dict, body: bytes):
        method = self.command
        if seg[:2] == ["api", "whoami-v2"]:
            user = self.user()
            if user is None:
                raise HubError(401, "Invalid credentials in Authorization header")
            return self.send(200, {"type": "user", "name": user, "auth": {"accessToken": {"role": "write"}}})
        if seg[:2] == ["api", "validate-yaml"]:
            return self.validate_yaml(json.loads(body))
        if seg[:3] == ["api", "repos", "create"]:
            return self.create_repo(json.loads(body))
        if seg[0] == "lfs-upload" and method == "PUT":
            return self.lfs_put(seg[1], body)
        if seg[:2] in (["api", "models"], ["api", "datasets"]) and len(seg) >= 4:
            kind = DATASETS if seg[1] == "datasets" else ""
            repo_id, action, rest = f"{kind}{seg[2]}/{seg[3]}", (seg[4] if len(seg) > 4 else None), seg[5:]
            return self.api_model(repo_id, action, rest, query, body)
        kind = DATASETS if seg[0] == DATASETS.rstrip("/") and len(seg) >= 3 else ""
        seg = seg[1:] if kind else seg
        if len(seg) >= 3 and seg[1].endswith(".git") and seg[2:5] == ["info", "lfs", "objects"]:
            repo_id = f"{kind}{seg[0]}/{seg[1][:-4]}"
            return self.lfs_batch(repo_id, json.loads(body)) if seg[5] == "batch" else self.send(200, {})
        if len(seg) >= 5 and seg[2] == "resolve":
            return self.resolve_file(f"{kind}{seg[0]}/{seg[1]}", seg[3], unquote("/".join(seg[4:])))
        raise HubError(404, f"no route for {method} {self.path}")

    def api_model(self, repo_id: str, action: str | None, rest: list[str], query: dict, body: bytes):
        method = self.command
        if action is None or (action == "revision" and method == "GET"):
            repo = self.repo(repo_id)
            commit = self.state.resolve(repo, rest[0] if rest else "main")
            name = repo_id.removeprefix(DATASETS)
            return self.send(200, {"id": name, "modelId": name, "sha": commit.oid, "private": repo.private,
                                   "siblings": [{"rfilename": p} for p in sorted(commit.files)], "tags": []})
        if action == "refs":
            repo = self.repo(repo_id)
            ref = lambda kind, name, oid: {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}  # noqa
            return self.send(200, {
                "branches": [ref("heads", n, o) for n, o in repo.branches.items()],
                "tags": [ref("tags", n, o) for n, o in repo.tags.items()],
                "converts": [], "pullRequests": [{"name": n, "ref": n, "targetCommit": o} for n, o in repo.prs.items()],
            })
        if action == "preupload":
            return self.preupload(self.repo(repo_id, write=True), rest[0], json.loads(body))
        if action == "commit":
            return self.commit(self.repo(repo_id, write=True), rest[0], query, body)
        if action == "commits":
            repo = self.repo(repo_id)
            commit, out = self.state.resolve(repo, rest[0]), []
            while commit is not None:
                out.append({"id": commit.oid, "title": commit.title, "message": commit.message,
                            "authors": [{"user": commit.author}], "date": commit.date})
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return self.send(200, out)
        if action == "paths-info":
            repo = self.repo(repo_id)
            commit = self.state.resolve(repo, rest[0])
            paths = parse_qs(body.decode()).get("paths", [])
            return self.send(200, [self.file_info(p, commit.files[p]) for p in paths if p in commit.files])
        if action == "tree":
            repo = self.repo(repo_id)
            commit = self.state.resolve(repo, rest[0])
            prefix = unquote("/".join(rest[1:]))
            return self.send(200, [self.file_info(p, e) for p, e in sorted(commit.files.items())
                                   if not prefix or p.startswith(prefix.rstrip("/") + "/")])
        if action == "branch" and method == "POST":
            return self.create_ref(self.repo(repo_id, write=True), "branch", unquote(rest[0]), json.loads(body or b"{}"))
        if action == "tag" and method == "POST":
            return self.create_ref(self.repo(repo_id, write=True), "tag", unquote(rest[0]), json.loads(body))
        raise HubError(404, f"unknown api action {action}")

    @staticmethod
    def file_info(path: str, entry: Entry) -> dict:
        info = {"type": "file", "path": path, "size": entry.size, "oid": entry.git_oid}
        if entry.lfs:
            info["lfs"] = {"oid": entry.sha256, "size": entry.size,
                           "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
        return info

    def validate_yaml(self, payload: dict):
        text = payload.get("content", "")
        try:
            if text.startswith("---\n"):
                yaml.safe_load(text.split("---\n", 2)[1])
        except yaml.YAMLError as e:
            return self.send(400, {"errors": [{"message": str(e)}]})
        return self.send(200, {"warnings": []})

    def create_repo(self, payload: dict):
        user = self.user()
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        namespace = payload.get("organization") or user
        repo_id = f"{DATASETS if payload.get('type') == 'dataset' else ''}{namespace}/{payload['name']}"
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a model under the namespace {namespace}")
        url = f"{self.server.url}/{repo_id}"
        if repo_id in self.state.repos:
            raise HubError(409, "You already created this model repo", extra={"url": url})
        repo = Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        files = {".gitattributes": self.state.store_regular(GITATTRIBUTES)}
        repo.branches["main"] = self.state.new_commit(repo, None, files, "initial commit", "", user).oid
        self.state.repos[repo_id] = repo
        return self.send(200, {"url": url, "name": repo_id})

    def preupload(self, repo: Repo, rev: str, payload: dict):
        files = self.state.resolve(repo, rev).files
        out = []
        for f in payload["files"]:
            is_lfs = f["path"].endswith(LFS_EXTENSIONS) or f["size"] >= LFS_MIN_SIZE
            existing = files.get(f["path"])
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.git_oid)
            out.append({"path": f["path"], "uploadMode": "lfs" if is_lfs else "regular", "shouldIgnore": False,
                        "oid": oid})
        return self.send(200, {"files": out, "commitOid": self.state.resolve(repo, rev).oid})

    def lfs_batch(self, repo_id: str, payload: dict):
        self.repo(repo_id, write=True)
        objects = []
        for obj in payload["objects"]:
            item = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.blobs:
                item["actions"] = {
                    "upload": {"href": f"{self.server.url}/lfs-upload/{obj['oid']}", "header": {}},
                    "verify": {"href": f"{self.server.url}/{repo_id}.git/info/lfs/objects/verify"},
                }
            objects.append(item)
        return self.send(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def lfs_put(self, oid: str, body: bytes):
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its oid")
        self.state.blobs[oid] = body
        return self.send(200, {})

    def commit(self, repo: Repo, rev: str, query: dict, body: bytes):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        create_pr = query.get("create_pr") == ["1"]
        head = self.state.resolve(repo, rev)
        if header.get("parentCommit") and not head.oid.startswith(header["parentCommit"]):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                files[value["path"]] = self.state.store_regular(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                if value["oid"] not in self.state.blobs:
                    raise HubError(422, f"LFS object {value['oid']} was never uploaded")
                files[value["path"]] = Entry(value["size"], value["oid"], True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: e for p, e in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        commit = self.state.new_commit(repo, head.oid, files, header["summary"], header.get("description", ""),
                                       self.user())
        pr_url = None
        if create_pr:
            ref = f"refs/pr/{len(repo.prs) + 1}"
            repo.prs[ref] = commit.oid
            pr_url = f"{self.server.url}/{repo.repo_id}/discussions/{len(repo.prs)}"
        else:
            repo.branches[unquote(rev).removeprefix("refs/heads/")] = commit.oid
        return self.send(200, {"commitUrl": f"{self.server.url}/{repo.repo_id}/commit/{commit.oid}",
                               "commitOid": commit.oid, "pullRequestUrl": pr_url})

    def create_ref(self, repo: Repo, kind: str, name: str, payload: dict):
        if kind == "branch":
            if name in repo.branches:
                raise HubError(409, f"Reference refs/heads/{name} already exists")
            start = self.state.resolve(repo, payload.get("startingPoint") or "main")
            repo.branches[name] = start.oid
        else:
            tag = payload["tag"]
            if tag in repo.tags:
                raise HubError(409, f"Tag {tag} already exists")
            repo.tags[tag] = self.state.resolve(repo, name).oid
        return self.send(200, {})

    def resolve_file(self, repo_id: str, rev: str, path: str):
        repo = self.repo(repo_id)
        commit = self.state.resolve(repo, rev)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.git_oid}"', "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        return self.send(200, self.state.blobs[entry.sha256], headers, content_type="application/octet-stream")


class HubServer(ThreadingHTTPServer):
    """`with HubServer(tokens) as hub:` serves on 127.0.0.1:<free port> in a daemon thread; `hub.url`."""

    daemon_threads = True

    def __init__(self, tokens: dict[str, str]):
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = HubState(tokens)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


# ------------------------------------------------------------------------------------------ for the tests that use it
HUB_TOKEN = "hf_aliceSecretToken0123456789"

PUBLISH_STEPS = """
import sys
from huggingface_hub import HfApi
repo, hf, steps = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")]
api = HfApi()
api.create_repo(repo)
api.upload_folder(repo_id=repo, folder_path=f"{hf}/final", commit_message="final")
for step in steps:
    api.create_branch(repo, branch=f"step{step}")
    api.upload_folder(repo_id=repo, folder_path=f"{hf}/step{step}", revision=f"step{step}")
"""


@contextlib.contextmanager
def alice_hub(home: Path):
    """A local Hub where HUB_TOKEN is alice's; `.env` is an environment pointing every HF client at it."""
    with HubServer({HUB_TOKEN: "alice"}) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
        env.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(home), HF_HUB_DISABLE_PROGRESS_BARS="1",
                   HF_HUB_DISABLE_TELEMETRY="1", HF_TOKEN=HUB_TOKEN, TOKENIZERS_PARALLELISM="false")
        server.env = env
        yield server


def run_with_hub(env: dict, *argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python *argv` from the repository root under `env`; the token must never appear in its output."""
    proc = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[2])
    assert HUB_TOKEN not in proc.stdout + proc.stderr
    return proc
