"""The API of the three kinds, as pydantic models: the one source of truth.

The CRD YAML under ``crds/`` is generated from these models (``api.crdgen``);
the operator, the validator and the kubectl plugin parse objects with them.
"""

from runbook_operator.api.circuitpolicy import CircuitPolicy, CircuitPolicySpec, CircuitPolicyStatus
from runbook_operator.api.common import GROUP, VERSION, Condition, parse_duration
from runbook_operator.api.execution import (
    ExecutionPhase,
    RunbookExecution,
    RunbookExecutionSpec,
    RunbookExecutionStatus,
    StepPhase,
    StepStatus,
)
from runbook_operator.api.runbook import (
    Param,
    Runbook,
    RunbookSpec,
    RunbookStatus,
    Step,
)

__all__ = [
    "GROUP",
    "VERSION",
    "CircuitPolicy",
    "CircuitPolicySpec",
    "CircuitPolicyStatus",
    "Condition",
    "ExecutionPhase",
    "Param",
    "Runbook",
    "RunbookExecution",
    "RunbookExecutionSpec",
    "RunbookExecutionStatus",
    "RunbookSpec",
    "RunbookStatus",
    "Step",
    "StepPhase",
    "StepStatus",
    "parse_duration",
]
