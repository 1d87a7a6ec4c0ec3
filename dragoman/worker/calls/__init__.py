"""The calls on a node: ``NodeCalls`` (which owns the agent pool), their control channels,
rooms, ICE restarts and end records."""
