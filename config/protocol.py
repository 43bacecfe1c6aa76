"""The RPC's protocol version (stdlib only: the shim imports it)."""

# The protocol version (docs/PROTOCOL.md §2 "Versions"): islurmd reports it in
# daemon.status; the shim sends it in session.acquire/attach. Raised only for a change an
# older peer would misread; additions (new optional params, new notifications) keep it.
PROTOCOL = 1
