"""The cluster's sessions: one module per operation, each with its master-side coroutines and the
handlers its peers run, exported as ``REQUEST_HANDLERS`` / ``ONEWAY_HANDLERS`` mappings that the
cluster core builds its dispatch table from; :mod:`.base` holds what they share."""
