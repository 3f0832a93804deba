"""The Kubernetes side of the agent: the only package that imports `kubernetes`.

- `client.KubeClient`: plain-dict API access (templates, HostNetworks, the Node, Events) with
  timeouts on every request and rotating service-account tokens.
- `reflector.Reflector`: list+watch into a store, robust to 410, silence, garbage and storms;
  reports keys for the work queue (`template_key`, `NODE_KEY`).

Import the submodules directly; this package imports nothing so `kubernetes` is only loaded by
code that needs it.
"""
