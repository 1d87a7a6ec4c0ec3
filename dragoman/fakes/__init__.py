"""Local FAKES of cloud provider APIs, for protocol tests and benchmarks only.

Nothing here translates anything: each fake implements the subset of a provider's public
wire protocol that dragoman uses, from the provider's documentation, and answers with
synthetic audio and text so that our side of the protocol can be tested where the real
service cannot be reached. Never configure a fake as a provider for real callers.
"""
