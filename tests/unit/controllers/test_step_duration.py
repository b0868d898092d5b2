"""One duration sample per finished step (controllers.telemetry.step_duration).

Cases: a step's duration runs from its status start to its end; a step that ended
within the second it started (the pod's end is in whole seconds, the start in
milliseconds) counts as 0 s, not as no sample; a step never seen Running takes its
start from its Job's record; the earlier status' start is used when the pass's has
none; nothing known gives no sample; hypothesis: any times give a sample >= 0.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from runbook_operator.api.execution import StepStatus
from runbook_operator.controllers.telemetry import step_duration
from runbook_operator.engine.plans import AttemptEnded
from runbook_operator.engine.timeutil import fmt

T0 = datetime(2026, 12, 8, 10, 0, 0, 700_000, tzinfo=UTC)


def status(started: datetime | None, finished: datetime | None) -> StepStatus:
    return StepStatus(phase="Succeeded", started_at=fmt(started) if started else None,
                      finished_at=fmt(finished) if finished else None)


def test_from_the_status_start_to_its_end() -> None:
    assert step_duration(status(T0, T0 + timedelta(seconds=42)), None, None) == 42.0


def test_a_step_shorter_than_a_second_is_a_zero_sample() -> None:
    whole_second = T0.replace(microsecond=0)  # the pod's end, truncated to the second
    assert step_duration(status(T0, whole_second), None, None) == 0.0


def test_never_seen_running_takes_the_jobs_start() -> None:
    end = AttemptEnded("a", 1, "job-a-1", T0, T0 + timedelta(seconds=3))
    assert step_duration(status(None, T0 + timedelta(seconds=3)), None, end) == 3.0
    assert step_duration(status(None, None), None, end) == 3.0
    earlier = status(T0 - timedelta(seconds=5), None)
    assert step_duration(status(None, T0), earlier, None) == 5.0


def test_nothing_known_is_no_sample() -> None:
    assert step_duration(status(None, None), None, None) is None


moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1),
                       timezones=st.just(UTC))


@given(st.none() | moments, st.none() | moments, st.none() | st.tuples(moments, moments))
def test_any_times_give_a_sample_of_zero_or_more(started: datetime | None,
                                                 finished: datetime | None,
                                                 job: tuple[datetime, datetime] | None
                                                 ) -> None:
    end = AttemptEnded("a", 1, "j", job[0], job[1]) if job else None
    seconds = step_duration(status(started, finished), None, end)
    assert seconds is None or seconds >= 0
    if started and finished:
        assert seconds is not None
