"""Thin kopf handlers: observe, ask the engine what to do, do it.

Handlers hold no decisions of their own; each pass recomputes from what is
observed on the cluster, so a restart or a missed or duplicated event changes
nothing.
"""
