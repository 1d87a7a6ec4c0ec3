"""Simultaneous interpretation for our own pipelines: commit stable words of re-decoded
audio while the person still talks (``agreement``), speak them in clause-sized pieces at a
pace that keeps up (``pieces``), never re-interpret the agent's own voice (``own_voice``);
``stt_service`` runs it over the node's Whisper."""
