"""Conformance scenarios run by the Open Inference Protocol's own clients, one client per process.

``python -m tests.v2.clients.<client>`` reads ``{"http": URL, "grpc": "HOST:PORT", "images": [0, 1],
"api_key": ""}`` from stdin, runs every scenario of that client against that server and prints their
outcomes as one JSON object; the tests
(``tests/v2/test_conformance.py``, ``e2e/test_v2.py``) judge them. A process per client because
tritonclient and kserve both register ``inference.*`` protobuf messages, which one process cannot hold
twice; nothing here imports the service either, as a real client would not.
"""
