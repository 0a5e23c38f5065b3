"""microservice-operator: one MicroService resource, kept alive."""

__version__ = "0.1.0"
