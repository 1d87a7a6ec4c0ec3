"""The offline provider (``local``), its services beside the cloud providers' modules:
Whisper speech-to-text (``whisper_stt``: consecutive, the utterance once the speaker pauses;
``simultaneous/`` holds the streaming policy), Whisper's translate task
(``speech_translator``) and Piper's voice (``piper_tts``), all served by the node's
inference service; ``interpretation.build`` is the call's provider stage."""
