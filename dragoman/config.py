"""The one settings object. Every knob has a default that works on a laptop.

Each field can be set from the environment with the ``DRAGOMAN_`` prefix, e.g.
``DRAGOMAN_PORT=9000`` or ``DRAGOMAN_MAX_CALLS=16``.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The interpretation providers' names: pipeline/providers/catalog.py holds one ProviderSpec
# per name (with its `direct` flag) and will not import unless these are exactly its own.
# Written here because config sits below the pipeline and validates the settings naming them.
ProviderName = Literal["local", "openai-translate", "openai-cascade", "gemini-live-translate"]
DirectProviderName = Literal["openai-translate", "gemini-live-translate"]

MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dragoman"


def parse_range(spec: str) -> tuple[int, int]:
    """``"35000-39999"`` → (35000, 39999); ValueError with the reason otherwise."""
    try:
        low_s, high_s = spec.split("-", 1)
        low, high = int(low_s), int(high_s)
    except ValueError as e:
        raise ValueError(f"a port range looks like 35000-39999, not {spec!r}") from e
    if not (1024 <= low < high <= 65535):
        raise ValueError(f"port range {spec!r} must be within 1024-65535, low < high")
    return low, high


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRAGOMAN_", extra="ignore")

    # --- HTTP control plane -------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    # Health, metrics and the autoscale view listen apart from the public port, so a load
    # balancer that forwards the public port never exposes them (README, "Operating it").
    internal_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port of /healthz, /metrics and /v1/fleet/autoscale (api and serve); "
        "default: port + 1000. Equal to port: one listener serves everything.",
    )
    internal_host: str | None = Field(
        None, description="Address the internal port binds; default: host."
    )
    max_body_bytes: int = Field(
        64 * 1024, description="Largest accepted request body; an SDP offer is a few KB."
    )
    # HTTPS on the public port (the internal one stays plain HTTP): a browser grants the
    # microphone only to a secure context, so a phone on the LAN needs it (`serve --https`).
    https: bool = Field(
        False,
        description="Serve the public port over HTTPS (serve --https); with no tls_cert, a "
        "self-signed certificate for this host's addresses is made at start.",
    )
    tls_cert: Path | None = Field(
        None, description="PEM certificate (chain) for HTTPS; setting it turns HTTPS on."
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")

    # --- fleet: registry, api ↔ worker hand-off ----------------------------------------
    registry: str = Field(
        "memory", description="'memory' (one machine, `serve`) or a redis:// URL (fleet)."
    )
    internal_token: str | None = Field(
        None, description="Shared secret the api presents to workers; required for a fleet."
    )
    node_id: str = Field(default_factory=socket.gethostname)
    worker_host: str = "127.0.0.1"
    worker_port: int = 8100
    worker_url: str | None = Field(
        None, description="How api replicas reach this worker; default http://worker_host:port."
    )
    node_ttl_s: float = Field(3.0, description="A node silent this long is never chosen.")
    heartbeat_s: float = Field(
        0.5, description="How often a worker reports; several beats fit in node_ttl_s."
    )
    reservation_ttl_s: float = Field(
        10.0, description="A reserved slot not confirmed by its worker by then is freed."
    )
    warm_buffer_slots: int = Field(
        8, description="Free call slots the autoscaler keeps booted beyond running calls."
    )
    max_nodes: int = Field(200, description="Upper bound the autoscaler may ask for.")
    handoff_timeout_s: float = Field(8.0, description="api → worker call hand-off deadline.")

    # --- autoscale policy (dragoman/fleet/autoscale.py, GET /v1/fleet/autoscale) --------
    # The floor is warm_buffer_slots and the ceiling max_nodes, above.
    autoscale_node_ready_s: float = Field(
        40.0, description="A worker node asked for now takes calls this long after (boot+start)."
    )
    autoscale_reaction_s: float = Field(
        15.0, description="Until the platform acts on the policy (Kubernetes HPA sync period)."
    )
    autoscale_headroom: float = Field(
        1.0, description="Multiplies the calls expected to arrive before a new node is ready."
    )
    autoscale_min_nodes: int = Field(1, ge=0, description="Lower bound of desired_nodes.")
    autoscale_api_replicas: int = Field(
        1,
        ge=1,
        description="api replicas behind the load balancer: each counts only the requests it "
        "served, so its arrival rate is multiplied by this.",
    )

    # --- node capacity and the pre-forked agent pool -----------------------------------
    max_calls: int = Field(8, ge=1, description="Concurrent calls this node accepts.")
    # Local-pipeline calls share the node's one Whisper + Piper service, which serves far
    # fewer of them than the node has media slots; cloud-provider calls never use it.
    local_capacity: int | None = Field(
        None,
        ge=0,
        description="Concurrent local-pipeline (provider 'local') calls this node admits, "
        "within max_calls; 0 takes none. Default: local_calls_per_core × the node's cores.",
    )
    local_calls_per_core: float = Field(
        1.0,
        gt=0,
        description="Local calls one core serves, for the local_capacity default "
        "(`dragoman bench capacity --provider local` measured 1.0 for simultaneous talkers "
        "on a 2-core machine; consecutive ones hold about 0.5).",
    )
    idle_target: int | None = Field(
        None,
        ge=0,
        description="Idle agent processes kept waiting. Default: every free call slot, "
        "bounded by idle_memory_budget_mb.",
    )
    idle_memory_budget_mb: int = Field(
        1024, description="Memory the idle agent processes may use together."
    )
    idle_process_estimate_mb: int = Field(
        60,
        description="Unique memory of one idle agent assumed (conservatively) until the worker "
        "has measured its own idle agents' USS right after start; then that sizes the pool.",
    )
    agent_answer_timeout_s: float = Field(
        5.0, description="An agent that has not answered an offer by then is killed."
    )
    agent_wait_s: float = Field(
        2.0,
        description="A call that finds no idle agent waits this long for the one forked for it "
        "(waiting calls are served in arrival order); then the dispatcher tries another node.",
    )
    retry_after_s: int = Field(2, description="Retry-After sent with 503 when no agent is free.")

    # --- media plane: Janus on each node, plain RTP to each agent ---------------------
    janus_binary: str = Field("janus", description="The Janus WebRTC Server executable.")
    janus_lib_dir: Path | None = Field(
        None, description="Janus' plugin/transport folder root; default: found under /usr/lib."
    )
    janus_event_loops: int = Field(
        2, ge=1, description="Janus' media threads (a static pool, not one per call)."
    )
    janus_log_level: int = Field(3, ge=0, le=7, description="Janus' own log level (3: warnings).")
    janus_probe_interval_s: float = Field(
        1.0, description="How often the worker checks that Janus answers."
    )
    janus_probe_timeout_s: float = Field(
        2.0, description="A Janus that has not answered a check by then is restarted."
    )
    media_port_range: str = Field(
        "20000-29999",
        description="UDP ports Janus uses towards callers (ICE/DTLS/SRTP): open them to callers.",
    )
    media_plain_port_range: str = Field(
        "30000-34999", description="Janus' plain-RTP ports towards agents (loopback only)."
    )
    agent_rtp_port_range: str = Field(
        "35000-39999", description="Agents' plain-RTP ports (loopback only)."
    )
    media_interfaces: str | None = Field(
        None,
        description="Interfaces or IP prefixes Janus announces to callers, comma-separated "
        "(Janus' ice_enforce_list); default: every non-loopback IPv4 address.",
    )
    media_public_ip: str | None = Field(
        None,
        description="A 1:1 NAT's public IP (cloud VMs): Janus announces it instead of the "
        "private address, and the node registers it as its media address.",
    )
    agent_ptime_ms: int = Field(
        40,
        description="Length of each Opus packet an agent sends (20, 40 or 60 ms): one packet "
        "and one wake-up per period. 40 ms costs a quarter less CPU per call than 20 (agent "
        "and Janus; measured) for 20 ms more delay on the agent's voice.",
    )
    opus_complexity: int = Field(
        1,
        ge=0,
        le=10,
        description="Opus encoder complexity of agents' speech: 1 costs half of 3 (measured) and"
        " is plenty for a voice at 32 kbit/s; raise it on nodes with CPU to spare.",
    )

    # --- TURN for callers behind UDP-blocking networks (coturn, REST-API secret) -------
    turn_urls: str | None = Field(
        None,
        description="Comma-separated TURN URLs handed to pages, e.g. "
        "'turn:turn.example.com:3478?transport=udp,turns:turn.example.com:443?transport=tcp'.",
    )
    turn_secret: SecretStr | None = Field(
        None, description="coturn's static-auth-secret (use-auth-secret): mints credentials."
    )
    turn_ttl_s: int = Field(
        300, ge=60, le=86400, description="Lifetime of the TURN credentials a page gets."
    )

    # --- admission and abuse limits (dragoman/api/admission.py); 0 disables a limit ----
    call_token_secret: SecretStr | None = Field(
        None,
        description=f"HS256 secret (at least {MIN_SECRET_BYTES} bytes) of call tickets. Set: "
        "creating a call, a direct session or a control channel needs a ticket the operator's "
        "backend signs. Unset: anyone who reaches the api may call (development).",
    )
    call_token_max_ttl_s: int = Field(
        3600, ge=10, description="Tickets valid for longer than this (exp - iat) are refused."
    )
    call_token_leeway_s: float = Field(
        5.0, ge=0, description="Clock skew allowed between the ticket signer and the api."
    )
    trusted_proxy_hops: int = Field(
        0,
        ge=0,
        description="Proxies in front of the api that append to X-Forwarded-For (1 behind one "
        "ingress); 0: the TCP peer is the client. Limits per address use the result.",
    )
    calls_per_minute_per_ip: int = Field(
        30, ge=0, description="Call requests (valid or not) per client address per minute."
    )
    calls_per_minute_per_subject: int = Field(
        10, ge=0, description="Call requests per ticket subject per minute."
    )
    concurrent_calls_per_ip: int = Field(
        10, ge=0, description="Calls running at once per client address (a NAT hides many)."
    )
    concurrent_calls_per_subject: int = Field(
        2, ge=0, description="Calls running at once per ticket subject."
    )
    direct_sessions_per_hour: int = Field(
        20,
        ge=0,
        description="Direct-mode sessions per ticket subject (per address without tickets) "
        "per hour: each is billed to the operator's provider account.",
    )
    control_messages_per_minute: int = Field(
        120, ge=0, description="Page → agent control messages per call per minute (bursts ok)."
    )
    language_switches_per_minute: int = Field(
        6, ge=0, description="Language or interpretation changes per call per minute."
    )
    ice_restarts_per_minute: int = Field(
        10,
        ge=0,
        description="ICE restarts (the page's new offer after a network switch) per call per "
        "minute: each renegotiates the call on the media gateway.",
    )

    # --- per-call limits ---------------------------------------------------------------
    max_call_s: float = Field(30 * 60, description="Hard cap on one call's duration.")
    no_media_timeout_s: float = Field(
        20.0, description="End the call when no audio arrived from the caller for this long."
    )
    connect_timeout_s: float = Field(
        15.0, description="End the call when WebRTC has not connected by then (abandoned)."
    )
    call_memory_limit_mb: int = Field(
        400, description="End a call whose process resident memory grows past this."
    )
    room_invite_ttl_s: int = Field(
        600,
        ge=30,
        le=86400,
        description="How long a room invitation link is valid; a slot next to the host is "
        "held for the guest meanwhile.",
    )
    drain_timeout_s: float = Field(
        60.0, description="On shutdown, how long running calls may continue before exit."
    )

    # --- supervision: the worker watches its agents and its inference service ----------
    agent_heartbeat_s: float = Field(
        1.0, gt=0, description="How often an agent's event loop tells the worker it runs."
    )
    agent_heartbeat_timeout_s: float = Field(
        5.0,
        gt=0,
        description="An agent silent this long (stuck loop, SIGSTOP) is killed; its call ends "
        "with agent_unresponsive. At least twice agent_heartbeat_s.",
    )
    agent_start_timeout_s: float = Field(
        30.0,
        gt=0,
        description="An agent not ready this long after its fork is killed and counted as a "
        "start-up failure (back-off); the forkserver's first preload is not counted.",
    )
    max_call_grace_s: float = Field(
        10.0,
        ge=0,
        description="The worker ends a call still running max_call_s plus this (the agent "
        "ends it itself at max_call_s; this is the backstop).",
    )
    inference_probe_interval_s: float = Field(
        1.0, gt=0, description="How often the worker pings the node's inference service."
    )
    inference_probe_timeout_s: float = Field(
        5.0,
        gt=0,
        description="An inference service that has not answered a ping by then is restarted "
        "(its exit is noticed at once).",
    )

    # --- pipeline ----------------------------------------------------------------------
    default_source: str = "ja"
    default_target: str = "en"
    vad_stop_s: float = Field(0.5, description="Silence that ends an utterance.")
    # Consecutive interpretation ends a turn sooner when Smart Turn v3 (Pipecat's model, on
    # the CPU, loaded once per node in the forkserver) judges the sentence finished; the
    # silence rule above stays for when it does not (pipeline.smart_turn).
    smart_turn: bool = Field(
        False,
        # Off by default: on our test voices (Kokoro Japanese, Piper English) the model
        # judged a comma's pause finished (0.68–0.98) as often as a sentence's end
        # (0.73–0.93), so sentences were cut in two — see README, Performance.
        description="Consecutive interpretation: Smart Turn decides the end of a turn.",
    )
    smart_turn_stop_s: float = Field(
        0.2, gt=0, description="Silence after which Smart Turn is asked whether a turn is over."
    )
    smart_turn_threshold: float = Field(
        0.8,
        ge=0,
        le=1,
        # 0.5 (Pipecat's) ended a Kokoro sentence at its comma (0.68 there, 0.92 at its end).
        description="Smart Turn's probability at which a turn is over.",
    )
    max_utterance_s: float = Field(15.0, description="Cut an utterance that runs this long.")
    min_utterance_s: float = Field(0.3, description="Shorter voiced segments are ignored.")
    partial_interval_s: float = Field(
        1.0, description="How often a partial source caption is transcribed; 0 turns it off."
    )
    audio_out_sample_rate: int = 24000

    # --- simultaneous mode (dragoman/pipeline/providers/local/simultaneous/) --------------
    simultaneous_step_s: float = Field(
        0.5,
        gt=0,
        description="How often the audio not yet committed is decoded again (bench lag: 0.5 s "
        "is ~0.7 s less lag than 1 s for ~30 % more inference CPU).",
    )
    simultaneous_pause_s: float = Field(
        0.25, gt=0, description="A gap between two words this long ends a unit (a breath)."
    )
    simultaneous_force_after_s: float = Field(
        3.0,
        gt=0,
        description="A word whose audio began this long ago is committed even if the last two "
        "decodes disagree on it (bounds the lag behind a speaker Whisper hesitates over).",
    )
    simultaneous_clause_after_s: float = Field(
        5.0,
        gt=0,
        description="A sentence still going after this long is cut (and translated) at its "
        "last committed clause end.",
    )
    simultaneous_max_buffer_s: float = Field(
        10.0, gt=1, description="Audio kept for re-decoding when no sentence or clause ends."
    )
    pace_relaxed_lag_s: float = Field(
        2.5, description="Lag behind the speaker up to which the voice keeps its normal speed."
    )
    pace_max_speed: float = Field(
        1.35, ge=1.0, le=2.0, description="The fastest the voice speaks to catch up."
    )
    pace_join_backlog: int = Field(
        2, ge=1, description="Pieces waiting for the voice at which new ones are joined."
    )

    # --- interpretation providers (dragoman/pipeline/providers/) ------------------------
    # Keys, prompts and glossaries stay on the server: nothing below is ever sent to a page.
    # A typo must stop the server at start (naming the valid ones), not fail every call.
    provider: ProviderName = Field(
        "local",
        description="Default provider of a call: "
        + " | ".join(get_args(ProviderName))
        + ". A call may ask for another configured one.",
    )
    openai_api_key: SecretStr | None = None
    openai_base_url: str = Field(
        "https://api.openai.com/v1", description="REST base; WebSocket URLs are derived (wss)."
    )
    openai_translate_model: str = "gpt-realtime-translate"
    openai_input_transcription_model: str = Field(
        "gpt-realtime-whisper", description="Source captions of a translation session."
    )
    openai_stt_model: str = Field("gpt-4o-transcribe", description="openai-cascade: speech→text.")
    openai_llm_model: str = Field("gpt-4.1-mini", description="openai-cascade: the translator.")
    openai_tts_model: str = Field("gpt-4o-mini-tts", description="openai-cascade: text→speech.")
    openai_tts_voice: str = "alloy"
    translation_prompt: str = Field(
        "You are a professional interpreter. Translate the user's words from {source} into "
        "{target}. Reply with the translation only: no notes, no quotes, no explanations.",
        description="openai-cascade system prompt; {source}/{target} become language names.",
    )
    # openai-cascade, simultaneous: the streamed transcription, when a piece of it is committed
    # for translation, and how the speech keeps pace (pipeline.providers.cascade_policy).
    openai_stream_transcription_model: str = Field(
        "gpt-realtime-whisper",
        description="openai-cascade, simultaneous: the realtime transcription session's model "
        "(gpt-realtime-whisper streams words while the person talks; gpt-4o-transcribe "
        "models transcribe each stretch of speech once it ends).",
    )
    openai_stream_transcription_delay: str = Field(
        "low",
        pattern="^(minimal|low|medium|high|xhigh)$",
        description="gpt-realtime-whisper: how long it waits before words (latency/accuracy).",
    )
    cascade_min_words: int = Field(
        3, ge=1, description="A clause/sentence boundary commits a piece of at least this many."
    )
    cascade_max_words: int = Field(
        8, ge=1, description="This many stable words with no boundary are committed anyway."
    )
    cascade_max_wait_s: float = Field(
        2.0, gt=0, description="Stable words waiting this long are committed anyway."
    )
    cascade_context_segments: int = Field(
        4, ge=0, description="Previous pieces (source and translation) sent with each one."
    )
    cascade_segment_prompt: str = Field(
        "The speaker is still talking: you receive their words piece by piece, after your "
        "translations of the previous pieces. Translate only the new piece so that it "
        "continues your previous translation; never repeat or restart it. A piece may end "
        "mid-sentence: translate what is there.",
        description="openai-cascade, simultaneous: added to the system prompt.",
    )
    cascade_speech_lead_s: float = Field(
        1.0, ge=0, description="The next piece goes for speech once this little is left to play."
    )
    cascade_faster_after_s: float = Field(
        3.0, gt=0, description="A speech backlog past this is spoken faster (TTS speed)."
    )
    cascade_join_after_s: float = Field(
        6.0, gt=0, description="A speech backlog past this sends waiting pieces as one request."
    )
    cascade_max_speed: float = Field(1.3, ge=1.0, le=4.0, description="The fastest TTS speed.")
    cascade_chars_per_s: float = Field(
        14.0, gt=0, description="How fast waiting text is estimated to be spoken, at speed 1."
    )
    glossary_dir: Path | None = Field(
        None,
        description="Folder of NAME.txt glossaries ('term = translation' lines); a call picks "
        "one by NAME. Read on the server only.",
    )
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str = Field(
        "https://generativelanguage.googleapis.com",
        description="Gemini API base URL given to the google-genai SDK (it derives the Live "
        "API's wss:// URL; a wss:// value is read as https://).",
    )
    gemini_model: str = "gemini-3.5-live-translate-preview"
    provider_connect_timeout_s: float = Field(
        5.0, description="A provider that has not accepted the session by then fails the call."
    )
    provider_ping_interval_s: float = Field(
        5.0,
        gt=0,
        description="Keepalive pings on a streaming provider's session: one that answers none "
        "for two intervals is stalled and dropped (the call reconnects once, then ends).",
    )
    provider_chunk_ms: int = Field(
        100, ge=20, le=500, description="Caller audio is sent to streaming providers in chunks."
    )
    provider_reconnects: int = Field(
        1, ge=0, description="Reconnects tried after a provider drops mid-call, then it ends."
    )
    direct_overflow: bool = Field(
        True,
        description="When the fleet has no free slot, answer with a direct-mode session "
        "(browser ↔ provider, ephemeral credential) instead of 503. Needs a direct "
        "provider's key.",
    )
    direct_provider: DirectProviderName = Field(
        "openai-translate",
        description="Direct mode's provider when the call names none (and, when it is not "
        "configured or cannot speak the target, the other one is tried).",
    )
    direct_secret_ttl_s: int = Field(
        60, ge=10, le=60, description="Lifetime of a direct-mode ephemeral client secret."
    )

    @field_validator("media_port_range", "media_plain_port_range", "agent_rtp_port_range")
    @classmethod
    def _port_range(cls, value: str) -> str:
        parse_range(value)  # ValueError says what is wrong
        return value

    @field_validator("agent_ptime_ms")
    @classmethod
    def _ptime(cls, value: int) -> int:
        if value not in (20, 40, 60):
            raise ValueError("agent_ptime_ms is 20, 40 or 60")
        return value

    @field_validator("call_token_secret")
    @classmethod
    def _ticket_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
            )
        return value

    @field_validator(
        "openai_api_key", "gemini_api_key", "turn_secret", "call_token_secret", mode="before"
    )
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        # compose passes an unset variable as "": that means no key, not an empty one.
        return None if value == "" else value

    # --- surge cost: overflow-aware floor, Kubernetes scale-down (README: Surges and cost)
    warm_buffer_overflow_slots: int | None = Field(
        None,
        ge=0,
        description="The autoscale floor when direct-mode overflow is available (a full "
        "fleet answers with a provider session), instead of warm_buffer_slots; None: the same.",
    )
    pod_deletion_cost: bool = Field(
        True,
        description="In Kubernetes, keep this worker pod's controller.kubernetes.io/"
        "pod-deletion-cost at its call count, so a scale-down removes empty pods first.",
    )
    pod_deletion_cost_interval_s: float = Field(
        10.0,
        ge=0,
        description="Least time between two updates of the pod-deletion cost, except when "
        "the pod becomes empty or stops being empty (those are written at once).",
    )
    pod_name: str | None = Field(
        None, description="This worker's pod (Kubernetes downward API, metadata.name)."
    )
    pod_namespace: str | None = Field(
        None, description="Its namespace; default: the service account's namespace file."
    )

    # --- node-local inference service (one per node, shared by all agent processes) -----
    inference_socket: Path | None = Field(
        None, description="Unix socket of the node's inference service; default: a temp path."
    )
    whisper_model_path: Path | None = Field(
        None, description="A faster-whisper (CTranslate2) model folder; default: Whisper base."
    )
    whisper_compute_type: str = "int8"
    whisper_threads: int = Field(
        0, ge=0, description="CPU threads per Whisper worker; 0 = auto (one per worker)."
    )
    whisper_workers: int = Field(
        0, ge=0, description="Concurrent Whisper decodes; 0 = auto (the node's cores / threads)."
    )
    # Whisper's encoder is trained on 30 s windows, but padding every utterance to 30 s
    # triples the CPU of a final's transcribe + translate pair. max(audio + 3 s, 10 s) gave
    # the same text and the fewest repetition loops of the shorter windows measured
    # (`dragoman bench whisper-window`, results/whisper-window/).
    whisper_window_min_s: float = Field(
        10.0,
        ge=0,
        le=30,
        description="Least encoder window, s: an utterance is padded to max(its length + "
        "whisper_window_pad_s, this), at most Whisper's 30 s (30 = always 30 s).",
    )
    whisper_window_pad_s: float = Field(
        3.0, ge=0, le=30, description="Padding after the audio in the encoder window, s."
    )
    piper_voice_path: Path | None = Field(
        None, description="A Piper .onnx English voice; default: the bundled en_US joe voice."
    )
    cache_dir: Path = Field(default_factory=_default_cache_dir)

    log_level: str = Field(
        "INFO", description="Our log level; DEBUG also lets the libraries' chatter through."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="'json': one JSON object per line, for log shippers."
    )

    @model_validator(mode="after")
    def _internal_port_default(self) -> Settings:
        if self.internal_port is None:
            self.internal_port = default_internal_port(self.port)
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key are given together (or neither)")
        return self


def default_internal_port(port: int) -> int:
    """The internal listener's port when none is set: 1000 above the public one (8000 →
    9000), below it where that would pass 65535."""
    return port + 1000 if port + 1000 <= 65535 else port - 1000


def node_cores() -> int:
    """Cores this process may run on (its CPU affinity, as a container's cpuset sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def local_capacity(settings: Settings, cores: int | None = None) -> int:
    """Local-pipeline calls this node admits: ``local_capacity``, or per core × cores."""
    if settings.local_capacity is not None:
        return settings.local_capacity
    n = node_cores() if cores is None else cores
    return max(1, int(settings.local_calls_per_core * n))


def settings_for_child(settings: Settings) -> str:
    """Settings as JSON for a child process on this node, secrets included.

    ``model_dump_json`` masks SecretStr fields ("**********"), which is right for logs but
    would hand agents a useless key. This goes only over a local pipe, never to a page.
    """
    data = settings.model_dump(mode="json")
    for name, value in settings:
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
    return json.dumps(data)
