"""Fleet rollout (docs/rollout.md): rollout slots on Leases, the per-node admission decision,
the template status a leader-elected agent aggregates, and the kubectl plugin.

Pure decisions (`rollout`, `aggregate`) are kept apart from the loops that feed them and the
Kubernetes calls (those stay in plumber_agent.kube)."""
