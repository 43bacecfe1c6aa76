"""islurm-proxy's exit codes: the one table (main.py's docstring and README.md show it).

Plain ints, not an IntEnum: `enum` costs the shim start-up time on every ssh."""

EXIT_OK = 0  # the stream ended: the node closed it, or stdout's reader (ssh) left
EXIT_INTERNAL = 1  # a bug: Python's traceback is on stderr
EXIT_USAGE = 2  # bad command line
EXIT_DAEMON = 3  # islurmd unreachable, could not be started, or broke the protocol
EXIT_ACQUIRE = 4  # no session: islurmd refused or failed the acquire (its message shown)
EXIT_NODE = 5  # cannot connect to the node's sshd, or the connection to it failed
EXIT_ENDED = 6  # the job ended under the open session

CODES = (EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_DAEMON, EXIT_ACQUIRE, EXIT_NODE, EXIT_ENDED)
