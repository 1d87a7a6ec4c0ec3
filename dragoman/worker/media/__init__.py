"""The node's media gateway: Janus, its configuration, its control connection and its log."""
