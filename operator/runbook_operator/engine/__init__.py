"""The functional core: pure decisions, no I/O, no clock reads (time is passed in).

Validation of runbooks, CEL evaluation, parameter resolution, the planner, retry
arithmetic, the circuit state machine and secret redaction live here, so that they
can be tested in milliseconds and fuzzed with hypothesis. (Redaction is here
because the planner redacts what a step prints before it reaches the status; logs,
Events and spans use the same functions.)
"""
