"""Fault-injection suite: the operator under crashes, control-plane restarts and network faults."""
