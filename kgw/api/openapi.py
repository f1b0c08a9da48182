"""OpenAPI description of kgw's jupyter-websocket REST API, plus a YAML emitter.

This module is pure: it builds plain JSON-compatible data and text, and
neither imports nor touches the web server.  ``build_openapi`` returns a
fresh document on every call, so callers may modify what they get back.

``ROUTES`` lists every (method, path template) pair the document describes,
so a test can compare it with the routes the server actually serves.
"""

import json
import math
import re

__all__ = ["ROUTES", "build_openapi", "to_yaml"]

OPENAPI_VERSION = "3.0.3"

KERNEL_SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"

ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/api"),
    ("GET", "/api/kernelspecs"),
    ("GET", "/api/kernelspecs/{kernel_name}"),
    ("GET", "/kernelspecs/{kernel_name}/{resource}"),
    ("GET", "/api/kernels"),
    ("POST", "/api/kernels"),
    ("GET", "/api/kernels/{kernel_id}"),
    ("DELETE", "/api/kernels/{kernel_id}"),
    ("POST", "/api/kernels/{kernel_id}/interrupt"),
    ("POST", "/api/kernels/{kernel_id}/restart"),
    ("GET", "/api/kernels/{kernel_id}/channels"),
    ("GET", "/api/sessions"),
    ("POST", "/api/sessions"),
    ("GET", "/api/sessions/{session_id}"),
    ("PATCH", "/api/sessions/{session_id}"),
    ("DELETE", "/api/sessions/{session_id}"),
    ("GET", "/api/swagger.json"),
    ("GET", "/api/swagger.yaml"),
    ("GET", "/metrics"),
)

# last_activity is always UTC, with microseconds and a trailing "Z",
# e.g. 2024-05-01T12:34:56.789012Z.
_TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"


# ---------------------------------------------------------------------------
# Small builders for repeated fragments
# ---------------------------------------------------------------------------


def _schema_ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _response_ref(name):
    return {"$ref": f"#/components/responses/{name}"}


def _param_ref(name):
    return {"$ref": f"#/components/parameters/{name}"}


def _json_content(schema):
    return {"application/json": {"schema": schema}}


def _json_response(description, schema, headers=None):
    response = {"description": description, "content": _json_content(schema)}
    if headers:
        response["headers"] = headers
    return response


def _error_response(description):
    return _json_response(description, _schema_ref("Error"))


def _no_content(description):
    return {"description": description}


def _location_header(what):
    return {
        "Location": {
            "description": f"Server-relative URL of the new {what}, including the base URL.",
            "required": True,
            "schema": {"type": "string"},
        }
    }


def _operation(operation_id, tag, summary, responses, **extra):
    """Build one operation; every operation can answer 401."""
    all_responses = dict(responses)
    all_responses["401"] = _response_ref("Unauthorized")
    operation = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
    }
    operation.update(extra)
    operation["responses"] = dict(sorted(all_responses.items(), key=lambda item: item[0]))
    return operation


def _json_body(schema_name, description, required):
    return {
        "description": description,
        "required": required,
        "content": _json_content(_schema_ref(schema_name)),
    }


# ---------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------


def _nullable(schema):
    """``schema``, also allowing null: in a request, null is the same as no value."""
    return {**schema, "nullable": True}


def _schemas():
    string = {"type": "string"}
    kernel_reference = {
        "type": "object",
        "description": "Which kernel the session should use: an existing "
        "kernel by id, or a new kernel of the named kernelspec.",
        "properties": {
            "id": {
                "type": "string",
                "nullable": True,
                "description": "Id of a running kernel to attach to.",
                "example": "6c3f1f6e-7a0e-4c55-9d4e-0f6b1b0c2a11",
            },
            "name": {
                "type": "string",
                "nullable": True,
                "description": "Kernelspec name for a new kernel.",
                "example": "python3",
            },
        },
    }
    session_fields = {
        "path": {
            "type": "string",
            "description": "Path of the document the session belongs to.",
            "example": "notebooks/analysis.ipynb",
        },
        "name": {
            "type": "string",
            "description": "Display name of the session.",
            "example": "analysis.ipynb",
        },
        "type": {
            "type": "string",
            "description": "Kind of session, e.g. notebook, console or file.",
            "example": "notebook",
        },
        "kernel": kernel_reference,
    }
    optional_fields = {name: _nullable(schema) for name, schema in session_fields.items()}
    return {
        "Error": {
            "type": "object",
            "description": "Body of every error response.",
            "required": ["reason", "message"],
            "properties": {
                "reason": {
                    "type": "string",
                    "description": "Short HTTP reason phrase.",
                    "example": "Not Found",
                },
                "message": {
                    "type": "string",
                    "description": "Human-readable explanation.",
                    "example": "Kernel does not exist: 1234",
                },
            },
        },
        "ApiVersion": {
            "type": "object",
            "required": ["version"],
            "properties": {
                "version": {
                    "type": "string",
                    "description": "Version of the server.",
                },
            },
        },
        "Kernel": {
            "type": "object",
            "description": "A running kernel.",
            "required": [
                "id",
                "name",
                "last_activity",
                "execution_state",
                "connections",
            ],
            "properties": {
                "id": {
                    "type": "string",
                    "description": "Kernel id (a UUID).",
                    "example": "6c3f1f6e-7a0e-4c55-9d4e-0f6b1b0c2a11",
                },
                "name": {
                    "type": "string",
                    "description": "Name of the kernelspec the kernel runs.",
                    "example": "python3",
                },
                "last_activity": {
                    "type": "string",
                    "format": "date-time",
                    "pattern": _TIMESTAMP_PATTERN,
                    "description": "Time of the last message to or from the "
                    "kernel: ISO 8601, UTC, with microseconds and a "
                    "trailing Z.",
                    "example": "2024-05-01T12:34:56.789012Z",
                },
                "execution_state": {
                    "type": "string",
                    "description": "Last known state of the kernel, such as "
                    "starting, idle, busy, restarting or dead.",
                    "example": "idle",
                },
                "connections": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Number of open websocket connections.",
                },
            },
        },
        "KernelSpec": {
            "type": "object",
            "description": "A kernel specification the server can start.",
            "required": ["name", "spec", "resources"],
            "properties": {
                "name": {"type": "string", "example": "python3"},
                "spec": {
                    "type": "object",
                    "description": "Contents of the kernelspec's kernel.json.",
                    "required": ["argv", "display_name", "language"],
                    "properties": {
                        "argv": {"type": "array", "items": string},
                        "display_name": {
                            "type": "string",
                            "example": "Python 3",
                        },
                        "language": {"type": "string", "example": "python"},
                    },
                },
                "resources": {
                    "type": "object",
                    "description": "Resource file name (e.g. logo-64x64) "
                    "mapped to a server-relative URL.",
                    "additionalProperties": string,
                },
            },
        },
        "KernelSpecs": {
            "type": "object",
            "required": ["default", "kernelspecs"],
            "properties": {
                "default": {
                    "type": "string",
                    "description": "Name of the default kernelspec.",
                    "example": "python3",
                },
                "kernelspecs": {
                    "type": "object",
                    "description": "Kernelspecs keyed by name.",
                    "additionalProperties": _schema_ref("KernelSpec"),
                },
            },
        },
        "Session": {
            "type": "object",
            "description": "A session: a document bound to a kernel.",
            "required": ["id", "kernel"],
            "properties": {
                "id": {
                    "type": "string",
                    "description": "Session id (a UUID).",
                    "example": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                },
                "path": session_fields["path"],
                "name": session_fields["name"],
                "type": session_fields["type"],
                "kernel": _schema_ref("Kernel"),
            },
        },
        "NewKernel": {
            "type": "object",
            "description": "Request to start a kernel. Both fields are "
            "optional; an empty body starts the default kernelspec.",
            "properties": {
                "name": {
                    "type": "string",
                    "nullable": True,
                    "description": "Kernelspec name; unknown names get 404.",
                    "example": "python3",
                },
                "env": {
                    "type": "object",
                    "nullable": True,
                    "description": "Environment variables for the kernel "
                    "process. Names must match [A-Za-z_][A-Za-z0-9_]*, and values "
                    "must be strings without NUL characters; other entries get "
                    "400. The server may ignore variables it does not allow.",
                    "additionalProperties": {"type": "string", "maxLength": 65536},
                    "example": {"KERNEL_USERNAME": "alice"},
                },
            },
        },
        "NewSession": {
            "type": "object",
            "description": "Request to create a session. Instead of path, the "
            "legacy notebook.path is accepted.",
            "required": ["path", "type"],
            "properties": {
                **optional_fields,
                "path": session_fields["path"],
                "type": session_fields["type"],
            },
        },
        "SessionPatch": {
            "type": "object",
            "description": "Fields of a session to change; a kernel entry "
            "switches the session to another (new or existing) kernel.",
            "properties": optional_fields,
        },
    }


def _parameters():
    return {
        "KernelId": {
            "name": "kernel_id",
            "in": "path",
            "required": True,
            "description": "Id of a running kernel.",
            "schema": {"type": "string"},
        },
        "SessionId": {
            "name": "session_id",
            "in": "path",
            "required": True,
            "description": "Id of a session.",
            "schema": {"type": "string"},
        },
        "KernelName": {
            "name": "kernel_name",
            "in": "path",
            "required": True,
            "description": "Name of a kernelspec.",
            "schema": {"type": "string"},
        },
    }


def _responses():
    return {
        "BadRequest": _error_response("The request body is not valid JSON or has invalid fields."),
        "Unauthorized": _error_response(
            "An auth token is configured and the request did not carry it."
        ),
        "Forbidden": _error_response("The server does not allow this."),
        "NotFound": _error_response("No such kernel, kernelspec or session."),
        "ServerError": _error_response("The server failed to do the work."),
        "TooLarge": _error_response("The request body is larger than the server accepts."),
    }


def _security_schemes():
    return {
        "tokenHeader": {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'Send the header "Authorization: token <token>".',
        },
        "tokenQuery": {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "Pass the token as the token query parameter.",
        },
    }


# ---------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------


def _paths():
    bad_request = _response_ref("BadRequest")
    forbidden = _response_ref("Forbidden")
    not_found = _response_ref("NotFound")
    server_error = _response_ref("ServerError")
    too_large = _response_ref("TooLarge")
    kernel_id = [_param_ref("KernelId")]
    session_id = [_param_ref("SessionId")]

    return {
        "/api": {
            "get": _operation(
                "getApiVersion",
                "meta",
                "Report the server version",
                {"200": _json_response("Server version.", _schema_ref("ApiVersion"))},
            ),
        },
        "/api/kernelspecs": {
            "get": _operation(
                "listKernelSpecs",
                "kernelspecs",
                "List the available kernelspecs",
                {
                    "200": _json_response(
                        "Kernelspecs and the default one.",
                        _schema_ref("KernelSpecs"),
                    ),
                },
            ),
        },
        "/api/kernelspecs/{kernel_name}": {
            "parameters": [_param_ref("KernelName")],
            "get": _operation(
                "getKernelSpec",
                "kernelspecs",
                "Describe one kernelspec",
                {
                    "200": _json_response("The kernelspec.", _schema_ref("KernelSpec")),
                    "404": not_found,
                },
            ),
        },
        "/kernelspecs/{kernel_name}/{resource}": {
            "parameters": [
                _param_ref("KernelName"),
                {
                    "name": "resource",
                    "in": "path",
                    "required": True,
                    "description": "File name of a kernelspec resource, such as logo-64x64.png.",
                    "schema": {"type": "string"},
                },
            ],
            "get": _operation(
                "getKernelSpecResource",
                "kernelspecs",
                "Download a resource file of a kernelspec",
                {
                    "200": {
                        "description": "The file, with a content type guessed from its name.",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "404": not_found,
                },
            ),
        },
        "/api/kernels": {
            "get": _operation(
                "listKernels",
                "kernels",
                "List running kernels",
                {
                    "200": _json_response(
                        "Running kernels.",
                        {"type": "array", "items": _schema_ref("Kernel")},
                    ),
                    "403": forbidden,
                },
                description="Answers 403 when kernel listing is disabled.",
            ),
            "post": _operation(
                "startKernel",
                "kernels",
                "Start a kernel",
                {
                    "201": _json_response(
                        "The kernel was started.",
                        _schema_ref("Kernel"),
                        headers=_location_header("kernel"),
                    ),
                    "400": bad_request,
                    "403": forbidden,
                    "404": not_found,
                    "413": too_large,
                    "500": server_error,
                },
                description="Answers 403 when the maximum number of kernels "
                "is running, 404 for an unknown kernelspec name and 500 when "
                "the kernel fails to start.",
                requestBody=_json_body("NewKernel", "Kernelspec and environment.", False),
            ),
        },
        "/api/kernels/{kernel_id}": {
            "parameters": kernel_id,
            "get": _operation(
                "getKernel",
                "kernels",
                "Describe a running kernel",
                {
                    "200": _json_response("The kernel.", _schema_ref("Kernel")),
                    "404": not_found,
                },
            ),
            "delete": _operation(
                "deleteKernel",
                "kernels",
                "Shut a kernel down",
                {
                    "204": _no_content("The kernel was shut down."),
                    "404": not_found,
                },
            ),
        },
        "/api/kernels/{kernel_id}/interrupt": {
            "parameters": kernel_id,
            "post": _operation(
                "interruptKernel",
                "kernels",
                "Interrupt a kernel",
                {
                    "204": _no_content("The interrupt was sent."),
                    "404": not_found,
                },
            ),
        },
        "/api/kernels/{kernel_id}/restart": {
            "parameters": kernel_id,
            "post": _operation(
                "restartKernel",
                "kernels",
                "Restart a kernel",
                {
                    "200": _json_response("The restarted kernel.", _schema_ref("Kernel")),
                    "404": not_found,
                    "500": server_error,
                },
            ),
        },
        "/api/kernels/{kernel_id}/channels": {
            "parameters": kernel_id,
            "get": _operation(
                "connectKernelChannels",
                "kernels",
                "Open a websocket to a kernel's channels",
                {
                    "101": _no_content("Switching to the websocket protocol."),
                    "400": _error_response(
                        "The request is not a websocket upgrade, or its handshake is malformed"
                        " (no Connection: Upgrade, no valid Sec-WebSocket-Key)."
                    ),
                    "404": not_found,
                    "426": {
                        **_error_response("The websocket version is not 13 (or 8)."),
                        "headers": {
                            "Sec-WebSocket-Version": {
                                "description": "The versions the gateway speaks.",
                                "schema": {"type": "string"},
                            }
                        },
                    },
                },
                description="Upgrades the connection to a websocket that "
                "carries Jupyter messages for all of the kernel's channels "
                "(shell, iopub, stdin, control). A client may ask for the "
                f"{KERNEL_SUBPROTOCOL} subprotocol in Sec-WebSocket-Protocol "
                "to get the binary framing of that protocol; otherwise "
                "messages are JSON text frames carrying a channel field.",
                parameters=[
                    {
                        "name": "session_id",
                        "in": "query",
                        "required": False,
                        "description": "Client session id used in the messages' headers.",
                        "schema": {"type": "string"},
                    }
                ],
            ),
        },
        "/api/sessions": {
            "get": _operation(
                "listSessions",
                "sessions",
                "List sessions",
                {
                    "200": _json_response(
                        "All sessions.",
                        {"type": "array", "items": _schema_ref("Session")},
                    ),
                    "403": forbidden,
                },
                description="Answers 403 when listing is disabled.",
            ),
            "post": _operation(
                "createSession",
                "sessions",
                "Create a session",
                {
                    "201": _json_response(
                        "The session was created.",
                        _schema_ref("Session"),
                        headers=_location_header("session"),
                    ),
                    "400": bad_request,
                    "403": forbidden,
                    "404": not_found,
                    "413": too_large,
                    "500": server_error,
                },
                description="Starts a kernel for the session unless an "
                "existing kernel id is given. Answers 403 when the maximum "
                "number of kernels is running, 404 for an unknown kernelspec "
                "or kernel id and 500 when the kernel fails to start.",
                requestBody=_json_body("NewSession", "The session to create.", True),
            ),
        },
        "/api/sessions/{session_id}": {
            "parameters": session_id,
            "get": _operation(
                "getSession",
                "sessions",
                "Describe a session",
                {
                    "200": _json_response("The session.", _schema_ref("Session")),
                    "404": not_found,
                },
            ),
            "patch": _operation(
                "updateSession",
                "sessions",
                "Change a session",
                {
                    "200": _json_response("The updated session.", _schema_ref("Session")),
                    "400": bad_request,
                    "403": forbidden,
                    "404": not_found,
                    "413": too_large,
                    "500": server_error,
                },
                description="Answers 400 for the id of a kernel that does not "
                "exist, and 403 when a new kernel is asked for and the maximum "
                "number of kernels is running.",
                requestBody=_json_body("SessionPatch", "The fields to change.", True),
            ),
            "delete": _operation(
                "deleteSession",
                "sessions",
                "Delete a session and shut its kernel down",
                {
                    "204": _no_content("The session was deleted."),
                    "404": not_found,
                },
            ),
        },
        "/api/swagger.json": {
            "get": _operation(
                "getOpenApiJson",
                "meta",
                "This API description as JSON",
                {
                    "200": _json_response("OpenAPI document.", {"type": "object"}),
                },
            ),
        },
        "/api/swagger.yaml": {
            "get": _operation(
                "getOpenApiYaml",
                "meta",
                "This API description as YAML",
                {
                    "200": {
                        "description": "OpenAPI document.",
                        "content": {"application/yaml": {"schema": {"type": "object"}}},
                    },
                },
            ),
        },
        "/metrics": {
            "get": _operation(
                "getMetrics",
                "meta",
                "The gateway's metrics, in Prometheus's text format",
                {
                    "200": {
                        "description": "Kernels by kernelspec and state, websockets, messages "
                        "relayed, kernel starts and HTTP requests, as kgw_* metric families.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                },
                description="Needs the token like every route, unless the gateway runs with "
                "metrics_open.",
            ),
        },
    }


def build_openapi(version: str, base_url: str = "/") -> dict:
    """Return a new OpenAPI 3.0.3 document for kgw's REST API.

    Paths are relative to the server root; ``base_url`` (where the server
    mounts them) goes into ``servers``.
    """
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "kgw",
            "version": version,
            "description": "REST and websocket API of kgw, a Jupyter kernel "
            "gateway that lets remote clients start, use and stop kernels.",
        },
        "servers": [{"url": base_url or "/"}],
        "tags": [
            {"name": "meta", "description": "Server information."},
            {"name": "kernelspecs", "description": "Kernels that can be started."},
            {"name": "kernels", "description": "Running kernels."},
            {"name": "sessions", "description": "Documents bound to kernels."},
        ],
        "security": [{"tokenHeader": []}, {"tokenQuery": []}, {}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "parameters": _parameters(),
            "responses": _responses(),
            "securitySchemes": _security_schemes(),
        },
    }


# ---------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------

# Characters that may stand unescaped inside a YAML double-quoted scalar.
# Besides YAML's non-printable characters, NEL, LS and PS must be escaped
# because YAML 1.1 parsers (PyYAML) treat them as line breaks and fold
# them, and the BOM is escaped so no reader mistakes it for a marker.
_NEEDS_ESCAPE = re.compile(
    "[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)

# YAML only accepts plain keys up to this length; longer keys need the
# explicit "? key" form.
_MAX_IMPLICIT_KEY = 1024


def _escape(match):
    code = ord(match.group())
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _quote(text):
    # json.dumps gives a valid YAML double-quoted scalar for the characters
    # it escapes; the rest are escaped here so the output is printable.
    return _NEEDS_ESCAPE.sub(_escape, json.dumps(text, ensure_ascii=False))


def _float(value):
    value = float(value)
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = float.__repr__(value)
    if "." not in text:
        # YAML 1.1 floats need a dot: 1e+20 must become 1.0e+20.
        mantissa, _, exponent = text.partition("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def _is_block(value):
    return isinstance(value, (dict, list, tuple)) and len(value) > 0


def _scalar(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, int):
        return int.__repr__(int(value))
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    raise TypeError(f"cannot emit {type(value).__name__} as YAML")


def _block(value, indent):
    """Lines of a non-empty mapping or sequence, starting at ``indent``."""
    pad = " " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"mapping keys must be str, not {type(key).__name__}")
            key_text = _quote(key)
            if len(key_text) > _MAX_IMPLICIT_KEY:
                lines.append(f"{pad}? {key_text}")
                key_text = ""
            if _is_block(item):
                lines.append(f"{pad}{key_text}:")
                lines.extend(_block(item, indent + 2))
            else:
                lines.append(f"{pad}{key_text}: {_scalar(item)}")
    else:
        for item in value:
            if _is_block(item):
                nested = _block(item, indent + 2)
                nested[0] = f"{pad}- {nested[0][indent + 2 :]}"
                lines.extend(nested)
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


def to_yaml(obj) -> str:
    """Emit JSON-compatible data as block-style YAML.

    Strings and keys are always double-quoted, so no value can be mistaken
    for another type (``"yes"``, ``"null"``, ``"1.0"`` stay strings).
    """
    if _is_block(obj):
        return "\n".join(_block(obj, 0)) + "\n"
    return _scalar(obj) + "\n"
