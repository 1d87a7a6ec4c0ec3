"""Plain-RTP media for agents: what Janus hands each call on loopback.

``rtp`` (packet header), ``reorder`` (sequence order, loss), ``opus`` (libopus),
``plain_sdp`` (NoSIP's barebone SDP), ``ports`` (an agent's RTP/RTCP socket pair).
"""
