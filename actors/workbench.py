"""`WorkbenchDeployment`: the annotation workbench on Ray Serve, a FastAPI ingress over `rlhf_ray.workbench`.

    GET  /  /label  /review  /dashboard  /guidelines     pages (plain HTML/JS from rlhf_ray/workbench/static)
    POST /api/session                                     sign in (bearer token) and start a labeling session
    GET  /api/tasks/next                                  the next task, blind, responses in a shuffled order
    POST /api/labels                                      submit {assignment_id, choice|ranking|scores|edited_response,
                                                          rationale}
    GET  /api/disputes?status=open|resolved|all           disputes; GET /api/disputes/{id} its thread
    POST /api/disputes/{id}/comments {text}               add to a thread
    POST /api/disputes/{id}/resolve {label fields, note}  reviewer: the final label
    GET  /api/guidelines, /api/guidelines/{family}?version=&diff_from=
    GET  /api/dashboard                                   reviewer: agreement, annotator health, SLA, queue
    POST /api/admin/flush                                 reviewer: write waiting rows to a shard now
    GET  /api/health

One replica on purpose: the event log and the queue have one writer. Every client mistake is a 4xx whose body
is {"error": {"field", "message", "status"}}; tokens only travel in the Authorization header, so access logs
never hold one, and the replica only ever sees their sha256 digests.
"""

import html
import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from ray import serve

from rlhf_ray.workbench import STATIC_DIR
from rlhf_ray.workbench.auth import bearer_token, token_digest
from rlhf_ray.workbench.config import Identity, WorkbenchArgs
from rlhf_ray.workbench.guidelines import GuidelineError
from rlhf_ray.workbench.rows import SubmissionError
from rlhf_ray.workbench.service import Workbench

PAGES = ("signin", "label", "review", "dashboard", "guidelines")
STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css", "charts.js": "text/javascript"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}
MAX_BODY_BYTES = 256 * 1024

app = FastAPI(title="rlhf-ray workbench", docs_url=None, redoc_url=None, openapi_url=None)


def _problem(error: SubmissionError) -> JSONResponse:
    return JSONResponse(error.to_dict(), status_code=error.status, headers=SECURITY_HEADERS)


@app.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {}
    field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
    return _problem(SubmissionError(field, f"field {field!r}: {first.get('msg', 'invalid')}"))


def _page(view: str, base: str) -> HTMLResponse:
    template = (STATIC_DIR / "page.html").read_text(encoding="utf-8")
    text = template.replace("{{BASE}}", html.escape(base, quote=True)).replace("{{VIEW}}", view)
    return HTMLResponse(text, headers=SECURITY_HEADERS)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise SubmissionError(None, f"body: {len(raw)} bytes, expected at most {MAX_BODY_BYTES}", 413)
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SubmissionError(None, "body: expected a JSON object", 400) from None
    if not isinstance(body, dict):
        raise SubmissionError(None, f"body: expected a JSON object, got {type(body).__name__}", 400)
    return body


@serve.deployment(num_replicas=1, max_ongoing_requests=64)
@serve.ingress(app)
class WorkbenchDeployment:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = WorkbenchArgs.model_validate(args)
        self.bench = Workbench.open(self.args)

    def _who(self, request: Request) -> Identity:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise SubmissionError("authorization", "sign in: send Authorization: Bearer <your token>", 401)
        identity = self.args.identities.get(token_digest(token))
        if identity is None:
            raise SubmissionError("authorization", "unknown token", 401)
        return identity

    def _signed_in(self, request: Request, call: Callable[..., Any], *args: Any) -> Any:
        """Any signed-in role may read guidelines: check the token, then answer."""
        self._who(request)
        return call(*args)

    async def _answer(self, call: Callable[[], Any]) -> Response:
        try:
            return JSONResponse(call(), headers=SECURITY_HEADERS)
        except SubmissionError as error:
            return _problem(error)
        except GuidelineError as error:
            return _problem(SubmissionError("guideline", str(error), 404))

    # -- pages ----------------------------------------------------------------------------------------------

    @app.get("/")
    async def signin_page(self, request: Request) -> Response:
        return _page("signin", request.scope.get("root_path", ""))

    @app.get("/{view}")
    async def page(self, view: str, request: Request) -> Response:
        if view not in PAGES:
            return _problem(SubmissionError("path", f"no page {view!r}; pages: {list(PAGES)}", 404))
        return _page(view, request.scope.get("root_path", ""))

    @app.get("/static/{name}")
    async def static(self, name: str) -> Response:
        if name not in STATIC_FILES:
            return _problem(SubmissionError("path", f"no static file {name!r}", 404))
        return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name], headers=SECURITY_HEADERS)

    # -- API ------------------------------------------------------------------------------------------------

    @app.get("/api/health")
    async def health(self) -> Response:
        return await self._answer(lambda: {"ok": True, "tasks": len(self.bench.tasks)})

    @app.post("/api/session")
    async def sign_in(self, request: Request) -> Response:
        return await self._answer(lambda: self.bench.sign_in(self._who(request)))

    @app.get("/api/tasks/next")
    async def next_task(self, request: Request) -> Response:
        return await self._answer(lambda: self.bench.next_task(self._who(request)))

    @app.post("/api/labels")
    async def submit(self, request: Request) -> Response:
        try:
            body = await _body(request)
        except SubmissionError as error:
            return _problem(error)
        return await self._answer(lambda: self.bench.submit(self._who(request), body))

    @app.get("/api/disputes")
    async def disputes(self, request: Request, status: str = "open") -> Response:
        return await self._answer(lambda: self.bench.list_disputes(self._who(request), status))

    @app.get("/api/disputes/{dispute_id}")
    async def dispute(self, dispute_id: str, request: Request) -> Response:
        return await self._answer(lambda: self.bench.get_dispute(self._who(request), dispute_id))

    @app.post("/api/disputes/{dispute_id}/{action}")
    async def dispute_action(self, dispute_id: str, action: str, request: Request) -> Response:
        actions = {"comments": self.bench.comment, "resolve": self.bench.resolve}
        try:
            if action not in actions:
                raise SubmissionError("path", f"no dispute action {action!r}; expected one of {sorted(actions)}", 404)
            who, body = self._who(request), await _body(request)
        except SubmissionError as error:
            return _problem(error)
        return await self._answer(lambda: actions[action](who, dispute_id, body))

    @app.get("/api/guidelines")
    async def guidelines(self, request: Request) -> Response:
        return await self._answer(lambda: self._signed_in(request, self.bench.guideline_index))

    @app.get("/api/guidelines/{family}")
    async def guideline(self, family: str, request: Request, version: str | None = None,
                        diff_from: str | None = None) -> Response:
        return await self._answer(lambda: self._signed_in(request, self.bench.guideline, family, version, diff_from))

    @app.get("/api/dashboard")
    async def dashboard(self, request: Request) -> Response:
        return await self._answer(lambda: self.bench.dashboard(self._who(request)))

    @app.post("/api/admin/flush")
    async def admin_flush(self, request: Request) -> Response:
        def flush() -> dict[str, Any]:
            if self._who(request).role != "reviewer":
                raise SubmissionError(None, "this action needs a reviewer token", 403)
            return self.bench.flush()

        return await self._answer(flush)

    # -- handle calls from the job ---------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        return self.bench.summary()

    def flush(self) -> dict[str, Any]:
        return self.bench.flush()


def workbench_app(args: WorkbenchArgs, num_cpus: float) -> Any:
    """The Serve application: one replica with `num_cpus` (a fraction is plenty: it is I/O-bound)."""
    return WorkbenchDeployment.options(ray_actor_options={"num_cpus": num_cpus}).bind(args.model_dump(mode="json"))
