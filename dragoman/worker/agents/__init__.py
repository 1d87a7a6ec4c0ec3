"""The node's agent processes: the pool, one process's handle, the forkserver and the
supervision policy."""
