"""The cluster's sessions: one module per operation, each with its master-side ``run`` coroutine
and the request handlers its peers execute (registered with the cluster core on import)."""
