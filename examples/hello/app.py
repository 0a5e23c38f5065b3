"""The classic Flask hello world, listening on port 5000."""

from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello() -> str:
    """Answer every visitor; the readiness probe of hello-standby uses this path too."""
    return "Hello, World!\n"


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
