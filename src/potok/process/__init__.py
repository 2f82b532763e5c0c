"""The gateway as processes: a worker builds the application (own API, Runtime, Gateway)
and serves it with server/, the supervisor forks and watches the workers and shares the
listening socket, reload swaps a worker's Runtime, gc_tuning sets up the collector for a
long-running server."""
