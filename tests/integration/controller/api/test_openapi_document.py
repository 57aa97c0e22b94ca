"""The OpenAPI document describes every answer: each /api/v1 operation lists its errors as
application/problem+json with the codes the route can give, whatever route is added later."""

from __future__ import annotations

from tests.support.api import GLOBAL, problem

PROBLEM = "application/problem+json"


def operations(api):
    spec = api.client.get("/openapi.json").json()
    for path, items in spec["paths"].items():
        for method, operation in items.items():
            yield spec, path, method.upper(), operation


def codes(operation, status: int) -> list[str]:
    schema = operation["responses"][str(status)]["content"][PROBLEM]["schema"]
    return schema["allOf"][1]["properties"]["code"]["enum"]


def test_every_error_of_every_operation_is_a_documented_problem(api):
    seen = 0
    for _, path, method, operation in operations(api):
        if not path.startswith("/api/v1/"):
            continue
        seen += 1
        responses = operation["responses"]
        assert {"401", "503"} <= responses.keys(), (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
        if operation.get("requestBody"):
            assert {"413", "422"} <= responses.keys(), (method, path)
        for status, answer in responses.items():
            if int(status) >= 400:
                assert list(answer["content"]) == [PROBLEM], (method, path, status)
    assert seen > 50
    spec = api.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    problem_schema = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code"} <= set(problem_schema["required"])
    assert {"errors", "limit_bytes", "job_id"} <= problem_schema["properties"].keys()


def test_each_route_lists_the_codes_its_code_can_answer(api):
    spec = {(method, path): op for _, path, method, op in operations(api)}
    run_now = spec[("POST", "/api/v1/schedules/{name}/run")]
    assert "schedule_not_found" in codes(run_now, 404) and "schedule_disabled" in codes(run_now, 409)
    assert {"token_expired", "token_revoked", "unauthorized"} <= set(codes(run_now, 401))
    devices = spec[("POST", "/api/v1/domains/{domain_id}/devices")]
    assert {"invalid_url", "url_credentials_not_allowed", "validation_error"} <= set(codes(devices, 422))
    assert "duplicate_serial" in codes(devices, 409)
    # Anyone with a token reads devices: no 403 on the read, one on the write.
    assert "403" not in spec[("GET", "/api/v1/domains/{domain_id}/devices")]["responses"]
    assert "forbidden" in codes(devices, 403)


def test_downloads_are_documented_with_their_media_types(api):
    spec = {(method, path): op for _, path, method, op in operations(api)}
    base = "/api/v1/domains/{domain_id}/devices/{device_id}/trustpoints/{name}"
    export = spec[("POST", base + "/export")]["responses"]["200"]["content"]
    assert export["application/x-pkcs12"]["schema"] == {"type": "string", "format": "binary"}
    assert export["application/x-pem-file"]["schema"] == {"type": "string"}
    assert spec[("DELETE", "/api/v1/tokens/{token_id}")]["responses"]["204"].get("content") is None


def test_a_wrong_method_names_every_method_of_the_resource(api):
    answer = api.call("PUT", f"/domains/{GLOBAL}/devices")
    problem(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "GET, POST"
    # /devices/import is a resource of its own, not a device id
    assert api.call("GET", f"/domains/{GLOBAL}/devices/import").headers.get("allow") is None
    assert api.call("OPTIONS", f"/domains/{GLOBAL}/devices/import").headers["allow"] == "POST"


def test_input_of_another_json_type_than_documented_is_refused(api):
    problem(api.call("PUT", "/cert-update/auto-update", json={"enabled": 0}), 422, "validation_error")
    problem(api.call("PATCH", f"/domains/{GLOBAL}", json={"auto_regenerate_keyring": "true"}), 422,
            "validation_error")
    problem(api.call("POST", "/tokens", json={"name": "t", "role": "read_only", "lifetime_days": "5"}), 422,
            "validation_error")
    assert api.call("POST", "/tokens", json={"name": "t", "role": "read_only", "lifetime_days": 5.0}
                    ).status_code == 201  # JSON Schema counts 5.0 as an integer


def test_a_page_past_any_list_is_refused_not_a_server_error(api):
    problem(api.get("/tokens?offset=9223372036854775808"), 422, "validation_error")
    assert api.get("/tokens?offset=2147483647").json()["items"] == []
