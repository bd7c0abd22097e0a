"""The REST API fuzzed by schemathesis from its own OpenAPI document, on a
running controller with a real switch: no 5xx, every response as the
document says (status, content type, headers, body), authentication
enforced, stateful sequences through the document's links; then the saved
state loads into a restarted controller as it was."""

from __future__ import annotations

import subprocess

from ryu_dsr.lab import TOKENS, Lab, program, rest

REST_PORT, OF_PORT = 18092, 16692
BASE = f"http://127.0.0.1:{REST_PORT}"


def test_schemathesis_finds_nothing_and_the_state_loads_afterwards():
    lab = Lab("dsrfz")
    try:
        lab.start_switch(controller_port=OF_PORT)
        settings = {"state_file": str(lab.run_dir / "state.db"), "probe_ip": "10.0.0.250"}
        controller = lab.start_controller(settings, rest_port=REST_PORT, of_port=OF_PORT)
        lab.wait_connected()
        run = subprocess.run(
            [
                program("schemathesis"),
                "run",
                f"{BASE}/v1/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKENS[BASE]}",
                "--checks",
                "all",
                # The document cannot say everything the API checks (cross-field
                # rules such as a check's timeout below its interval, address
                # classes): requests it allows may still be refused, with a 400
                # naming the field.
                "--exclude-checks",
                "positive_data_acceptance",
                "--max-examples",
                "30",
                "--seed",
                "1",
                "--generation-database",
                "none",
                "--no-color",
                "--request-timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert " passed" in run.stdout and "Stateful" in run.stdout
        status, before = rest(BASE, "GET", "/v1/config")
        assert status == 200
        switch = rest(BASE, "GET", "/v1/switches")[1][0]
        assert switch["in_line"] and switch["errors"] == 0, switch
        lab.stop(controller)
        lab.start_controller(settings, rest_port=REST_PORT, of_port=OF_PORT)
        lab.wait_connected()
        assert rest(BASE, "GET", "/v1/config") == (200, before)
    finally:
        lab.destroy()
