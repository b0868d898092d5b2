"""The functional core: pure decisions, no I/O, no clock reads (time is passed in).

Validation of runbooks, CEL evaluation, parameter resolution, the planner, retry
arithmetic and the circuit state machine live here, so that they can be tested
in milliseconds and fuzzed with hypothesis.
"""
