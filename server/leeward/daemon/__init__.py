"""The daemon: `leeward daemon --stdio`, spawned by the VS Code extension like a language server.

It speaks JSON-RPC on stdin/stdout (pygls; `server.py`), keeps the user's environments current
from the fleet's event stream (`link.py`), watches their health (`health.py`) and does what the
extension asks (`service.py`). Nothing but JSON-RPC ever goes to its stdout.
"""
