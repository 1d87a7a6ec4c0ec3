"""What a call's pipeline hears and speaks through (Pipecat's ``transports/`` shape): the
plain-RTP transport between Janus and the agent process (``rtp``: the Pipecat transport;
``rtp_media``: the media clock under it, Opus in and out; ``pacing``: how punctually its
packets leave)."""
