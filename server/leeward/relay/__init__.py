"""The resumable relay between `leeward proxy` and the environment's agent (docs/relay-protocol.md).

`frames` is the wire format, `stream` the session core (sequence numbers, acknowledgements,
replay buffers), `handshake` who is who and the resume proof, `agent` the agent's endpoint,
`proxy` the ProxyCommand, `candidates` where an environment can be reached.
"""
