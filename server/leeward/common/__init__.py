"""What every process shares: one home per mechanism (the clock, backoff, atomic file writes,
threads that run to the end, whether a process is alive, the sentence made from a validation
error, the fleet's error), the OpenSSH certificate parser, and the rules on profile files.

Nothing here imports another part of Leeward but the protocol: the fleet, the agent, the
daemon, the relay, the client side and the CLI all stand on it.
"""
