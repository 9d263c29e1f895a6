"""Schema-based fuzzing (schemathesis) of the real server's OpenAPI spec: no 5xx, ever.

The operations are driven through Hypothesis directly (schemathesis' own pytest plugin
does not load under this pytest), with a bounded number of examples per operation.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from test_ui_helpers import Server, make_run, mujoco_segments

EXAMPLES = 60


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    run = tmp_path_factory.mktemp("fuzz")
    make_run(run, mujoco_segments("HalfCheetah-v5", 4, 6), n_queries=20)
    srv = Server(run, "--gold-every", "2", "--render-ahead", "0", "--clip.width", "64",
                 "--clip.height", "64")  # fmt: skip
    yield srv
    srv.stop()


@pytest.mark.slow
def test_no_server_errors_under_fuzzing(fuzz_server):
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {(op.method.upper(), op.path) for op in operations}
    assert {("POST", "/api/labels"), ("POST", "/api/queries/next"),
            ("GET", "/api/clips/{segment_id}"), ("GET", "/api/status")} <= paths  # fmt: skip
    statuses: dict[str, set[int]] = {}
    for op in operations:

        @given(
            case=op.as_strategy(GenerationMode.POSITIVE) | op.as_strategy(GenerationMode.NEGATIVE)
        )
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def check(case):
            response = case.call(base_url=fuzz_server.base, timeout=60)
            statuses.setdefault(case.operation.path, set()).add(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.formatted_path}"
            case.validate_response(response, checks=[not_a_server_error])

        check()
    # valid and invalid requests both got through: the handlers and the validation layer
    assert {200, 422} <= statuses["/api/queries/next"]
    assert 422 in statuses["/api/labels"] and statuses["/api/labels"] & {200, 404, 409}
