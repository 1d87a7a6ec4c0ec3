"""dragoman: self-hostable real-time voice interpretation over WebRTC."""

__version__ = "0.1.0"
