"""A minimal Hugging Face Hub on 127.0.0.1 for upload tests: the endpoints create_repo + upload_folder use
(repos/create, validate-yaml, preupload, commit). Files are asked for inline ("regular" upload mode), kept in
memory."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


class FakeHub:
    def __init__(self, token: str = "hf_test_token"):
        self.token = token
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "files": {path: bytes}, "commits": [...]}
        self.requests: list[tuple[str, str]] = []
        self.metadata: list[dict] = []  # model-card front matter the client asked to validate
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, code: int, obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                hub.requests.append(("POST", self.path))
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    req = json.loads(data)
                    repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                    private = req.get("visibility") == "private" or bool(req.get("private"))
                    hub.repos.setdefault(repo_id, {"private": private, "files": {}, "commits": []})
                    return self._reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
                if path == "/api/validate-yaml":  # the hub checks a README's front matter before committing it
                    content = json.loads(data)["content"]
                    try:
                        meta = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else {}
                        assert isinstance(meta, dict)
                    except Exception as e:  # noqa: BLE001 - any parse failure is the client's error
                        return self._reply(400, {"error": f"invalid YAML metadata: {e}"})
                    hub.metadata.append(meta)
                    return self._reply(200, {"errors": [], "warnings": []})
                parts = path.split("/")  # /api/models/ORG/NAME/(preupload|commit)/REV
                if len(parts) >= 7 and parts[1:3] == ["api", "models"]:
                    repo_id, action = f"{parts[3]}/{parts[4]}", parts[5]
                    if repo_id not in hub.repos:
                        return self._reply(404, {"error": "Repository not found"})
                    if action == "preupload":
                        files = json.loads(data)["files"]
                        return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                            "shouldIgnore": False} for f in files]})
                    if action == "commit":
                        lines = [json.loads(ln) for ln in data.decode().splitlines() if ln.strip()]
                        repo = hub.repos[repo_id]
                        for ln in lines:
                            if ln["key"] == "file":
                                repo["files"][ln["value"]["path"]] = base64.b64decode(ln["value"]["content"])
                            elif ln["key"] == "header":
                                repo["commits"].append(ln["value"]["summary"])
                        oid = f"{len(repo['commits']):040x}"
                        return self._reply(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}",
                                                 "commitOid": oid, "success": True})
                return self._reply(404, {"error": f"unsupported {path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
