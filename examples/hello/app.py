"""The classic Flask hello world, listening on port 5000, with the two metrics the
README's SLO analysis example queries (served on /metrics):

- ``http_requests_total{code}``: requests answered, by status code;
- ``http_request_duration_seconds``: a histogram of the time to answer.

``ERROR_RATIO`` (0 to 1, default 0) makes that share of requests fail with a 500, so
that a release that fails its users while every probe passes is one env var away:
the operator's analysis then rolls it back.
"""

import os
import random
import time

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

app = Flask(__name__)
ERROR_RATIO = float(os.environ.get("ERROR_RATIO", "0"))
REQUESTS = Counter("http_requests", "Requests answered, by status code.", ["code"])
LATENCY = Histogram("http_request_duration_seconds", "Time to answer a request.")


@app.before_request
def started() -> None:
    g.started = time.perf_counter()


@app.after_request
def measured(response: Response) -> Response:
    if request.path != "/metrics":
        REQUESTS.labels(str(response.status_code)).inc()
        LATENCY.observe(time.perf_counter() - g.started)
    return response


@app.route("/")
def hello() -> tuple[str, int]:
    """Answer every visitor; the readiness probe of hello-standby uses this path too."""
    if random.random() < ERROR_RATIO:
        return "Something went wrong\n", 500
    return "Hello, World!\n", 200


@app.route("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
