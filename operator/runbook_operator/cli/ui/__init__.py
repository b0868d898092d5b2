"""``kubectl runbook ui``: a live web view of runs, served on the user's own machine.

Why it exists: during an incident the commander watches the procedure and someone
approves; a browser page that updates live is easier to share on a call than a
terminal. It acts with the user's own kubeconfig, like ``kubectl proxy``: no new
server identity, every action is the user's own API call judged by the same RBAC
and admission policies as the CLI.

Modules: ``guard`` (token, Host and Origin checks; pure), ``model`` (what a page
shows of an object, secrets redacted; pure), ``kube`` (an async API client on the
kubeconfig), ``streams`` (watch API -> server-sent events), ``actions`` (approve,
reject, cancel, retry, run), ``server`` (the aiohttp app and the command).
"""
