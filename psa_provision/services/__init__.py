"""One home per service: everything the tool knows about a service lives in services/<name>/.

Each package's `__init__` names the service's paths, units, packages and templates (stdlib only,
so facts and the catalog can read them without importing planning). Beside it, as the service needs:
`component` (desired state: (ctx, facts) -> Changes, pure), `facts` (its part of the facts probe),
`health` (its `psa-provision health` probe and judgement), `expected` (the seed's settings verify
holds the guest to), `checks` (its testinfra checks, collected by suites/test_phase*.py) and
`mover` (its data mover for `migrate`). Shared helpers: common (files, packages, units, commands),
context (HostContext), catalog (every service's paths by component), mover (the Mover protocol),
registry (planners and movers by name). Templates stay package data in data/templates.
"""
