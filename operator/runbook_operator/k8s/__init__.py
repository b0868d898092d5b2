"""The Kubernetes side of the shell: clients, Job manifests, status writes, Events.

Everything that talks to the apiserver goes through here, with tenacity retrying
transient failures (5xx, 429, connection resets) and nothing else.
"""
