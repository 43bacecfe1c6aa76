"""Self-update: policy, versions, the git and pip/venv interfaces, generations, the checker."""
