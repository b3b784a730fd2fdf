"""The engineer's side: what the CLI, the daemon and `leeward proxy` share on the engineer's
machine. `paths` (where things are kept), `credentials` (the signed-in fleet and token), `api`
(the fleet's HTTP client), `access` (signing in; the SSH key, certificate and config),
`sshconfig` (what `leeward config-ssh` writes) and `locate` (finding an environment: the
fleet's API, its DNS and the last-known-good cache, raced).
"""
