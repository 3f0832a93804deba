"""Test support shared by more than one tier: doubles at our own seams (fakehost, with fakebond: the host
drivers; fleetsim: agents and the Lease API for fleet rollouts), real agent processes
(agent_proc) against a fake cluster (cluster) and the fake API server's fixtures
(fakeapi_fixtures). Support of one tier stays in it (tests/e2e: harness, steps, rollout).
Small generic helpers (bounded waits, netns, ports) are in tests/helpers; the fake API server
itself is tests/fakeapi."""
