"""Request paths and error classification of the one API client module."""

import pytest

from microservice_operator.kube import DEPLOYMENTS, MICROSERVICES, PODS, KubeError


def test_paths() -> None:
    assert DEPLOYMENTS.path("ns", "web") == "/apis/apps/v1/namespaces/ns/deployments/web"
    assert PODS.path("ns") == "/api/v1/namespaces/ns/pods"
    assert PODS.path(None) == "/api/v1/pods"
    assert MICROSERVICES.api_version == "mso.dev/v1alpha1"


@pytest.mark.parametrize(
    ("status", "message", "invalid", "terminating"),
    [
        (422, "Deployment.apps is invalid", True, False),
        (500, "failed to convert new object: quantities must match", True, False),
        (500, "etcdserver: request timed out", False, False),
        (
            403,
            "unable to create new content in namespace x because it is being terminated",
            False,
            True,
        ),
        (404, 'namespaces "x" not found', False, True),
        (404, 'deployments.apps "x" not found', False, False),
        (409, "conflict", False, False),
    ],
)
def test_error_classification(status: int, message: str, invalid: bool, terminating: bool) -> None:
    err = KubeError(status, "Reason", message)
    assert (err.invalid, err.namespace_terminating) == (invalid, terminating)
