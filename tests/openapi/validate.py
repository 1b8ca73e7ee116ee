"""Checks an OpenAPI 3.1 document, and real answers against it.

    validate.py SPEC.json [ANSWERS.json]

SPEC.json is validated by openapi-spec-validator: the document is OpenAPI
3.1 and every reference in it resolves. ANSWERS.json, if given, is a list of
{"path", "method", "status", "content_type"?, "body"}: each body is checked
against the schema the document declares for that operation and status
(or its `default` response), with the document's own references, by
jsonschema's Draft 2020-12 validator (the dialect of OpenAPI 3.1).

Prints one line per problem and exits 1 if there is any.
"""

import json
import sys

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = "urn:aforo:openapi"


def pointer(*parts):
    return "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    validate(spec)
    if len(sys.argv) < 3:
        print(f"{sys.argv[1]}: valid OpenAPI {spec['openapi']}")
        return 0
    with open(sys.argv[2]) as f:
        answers = json.load(f)
    registry = Registry().with_resource(ROOT, Resource(contents=spec, specification=DRAFT202012))
    problems = 0
    for a in answers:
        responses = spec["paths"][a["path"]][a["method"]]["responses"]
        status = str(a["status"])
        key = status if status in responses else "default"
        response = responses[key]
        if "$ref" in response:
            name = response["$ref"].rsplit("/", 1)[1]
            response = spec["components"]["responses"][name]
            where = ["components", "responses", name]
        else:
            where = ["paths", a["path"], a["method"], "responses", key]
        content_type = a.get("content_type", "application/json")
        if content_type not in response.get("content", {}):
            print(f"{a['method'].upper()} {a['path']} {status}: no {content_type} answer is declared")
            problems += 1
            continue
        ref = ROOT + "#/" + pointer(*where, "content", content_type, "schema")
        validator = Draft202012Validator({"$ref": ref}, registry=registry)
        for error in validator.iter_errors(a["body"]):
            at = "/".join(str(p) for p in error.absolute_path)
            print(f"{a['method'].upper()} {a['path']} {status}: at /{at}: {error.message}")
            problems += 1
    print(f"{sys.argv[1]}: valid OpenAPI {spec['openapi']}; {len(answers)} answers checked, {problems} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
