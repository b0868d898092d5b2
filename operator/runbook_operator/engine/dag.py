"""The order in which a pass looks at a DAG's steps.

Why it exists apart from the planner: a pure graph function, tested on its own,
that the planner's pass and its mixins share.
"""

from __future__ import annotations

import heapq

from runbook_operator.api.runbook import Step


def topological(steps: list[Step]) -> list[Step]:
    """Steps in dependency order, spec order among equals (Kahn's algorithm with a heap).

    Dependencies outside ``steps`` are ignored; steps on a cycle (which validation
    rejects) are appended last rather than dropped.
    """
    index = {s.name: i for i, s in enumerate(steps)}
    indegree = [0] * len(steps)
    dependants: list[list[int]] = [[] for _ in steps]
    for i, step in enumerate(steps):
        for dep in set(step.depends_on):
            if dep in index and dep != step.name:
                indegree[i] += 1
                dependants[index[dep]].append(i)
    ready = [i for i, n in enumerate(indegree) if n == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in dependants[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                heapq.heappush(ready, j)
    seen = set(order)
    order += [i for i in range(len(steps)) if i not in seen]
    return [steps[i] for i in order]
