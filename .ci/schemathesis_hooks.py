"""Schemathesis hooks for .ci/schemathesis: explicit cases with live tokens.

Generated tokens are random text, so without help the fuzzer only ever sees the refusals of the
routes that take a token as data (GET /ds-api/user-token, POST /oauth/introspect and
/oauth/revoke). .ci/schemathesis mints real tokens of every kind before the run and passes them
in the JSON file named by TOKENMINT_ST_TOKENS:

    {"info": [user-token, ...], "introspect": [token, ...], "revoke": [token, ...]}

Each list holds tokens of its own, so that a revocation never voids a token another operation
is given. The cases below run in the examples phase with every check, so the success answers
(200 with the token's content, {"active": true, ...}) are checked against the document too.
Explicit cases are not given credentials by themselves: each gets its operation's from the
configuration's [auth.openapi] section, as generated cases do.

Generated valid (positive) cases of GET /ds-api/user-token get a live user-token too, in about
half of them, so that fuzzing sees the route answer 200 as well as 401. A valid user-token is as
schema-valid as the random text it replaces; negative cases are left alone.
"""

import json
import os

import schemathesis
from schemathesis.auths import AuthContext

FORM = "application/x-www-form-urlencoded"


def _tokens() -> dict:
    path = os.environ.get("TOKENMINT_ST_TOKENS")
    if not path:
        return {}
    with open(path, encoding="utf-8") as fd:
        return json.load(fd)


TOKENS = _tokens()


def _authenticated(operation, **kwargs):
    case = operation.Case(**kwargs)
    if not operation.schema.apply_auth(case, AuthContext(operation=operation, app=None)):
        raise RuntimeError(f"no credentials configured for {operation.label}")
    return case


def _route(operation) -> tuple:
    return (operation.method.upper(), operation.path)


@schemathesis.hook
def map_case(context, case):
    user_tokens = TOKENS.get("info")
    meta = case.meta
    if not user_tokens or meta is None or not meta.generation.mode.is_positive:
        return case
    if _route(case.operation) != ("GET", "/ds-api/user-token") or not isinstance(case.query, dict):
        return case
    for name in ("token", "user-token"):
        value = case.query.get(name)
        # A deterministic half: Hypothesis needs the same draw to give the same case.
        if isinstance(value, str) and len(value) % 2 == 0:
            case.query[name] = user_tokens[0]
    return case


@schemathesis.hook
def before_add_examples(context, examples):
    operation = context.operation
    if operation is None:
        return
    route = _route(operation)
    if route == ("GET", "/ds-api/user-token"):
        for token in TOKENS.get("info", []):
            # Both spellings of the query parameter, as the route documents them.
            examples.append(_authenticated(operation, query={"token": token}))
            examples.append(_authenticated(operation, query={"user-token": token}))
    elif route == ("POST", "/oauth/introspect"):
        for token in TOKENS.get("introspect", []):
            examples.append(_authenticated(operation, body={"token": token}, media_type=FORM))
    elif route == ("POST", "/oauth/revoke"):
        for token in TOKENS.get("revoke", []):
            body = {"token": token, "token_type_hint": "access_token"}
            examples.append(_authenticated(operation, body=body, media_type=FORM))
