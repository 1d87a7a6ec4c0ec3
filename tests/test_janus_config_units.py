"""The Janus configuration a node generates (``worker/media/janus_config.py``): only the plugins
and transports used, the media port range and NAT mapping, the Unix sockets."""

from __future__ import annotations

from pathlib import Path

from dragoman.config import Settings
from dragoman.worker.media.janus_config import janus_files


# --- Janus configuration -------------------------------------------------------------------
def test_janus_config_loads_only_what_is_used(tmp_path: Path) -> None:
    s = Settings(media_port_range="21000-21999", media_public_ip="203.0.113.7")
    files = janus_files(s, tmp_path, tmp_path / "ws.sock", tmp_path / "admin.sock", "s3")
    main = files["janus.jcfg"]
    assert 'rtp_port_range = "21000-21999"' in main
    assert 'nat_1_1_mapping = "203.0.113.7"' in main
    assert "stun_server" not in main  # nothing waits on a STUN gather
    disabled = main.split("plugins: {")[1].split("}")[0]
    assert "libjanus_videoroom.so" in disabled and "libjanus_nosip.so" not in disabled
    transports = main.split("transports: {")[1].split("}")[0]
    assert "libjanus_http.so" in transports and "libjanus_websockets.so" not in transports
    assert f'ws_unix = "{tmp_path / "ws.sock"}"' in files["janus.transport.websockets.jcfg"]
    assert 'local_ip = "127.0.0.1"' in files["janus.plugin.nosip.jcfg"]
    assert 'admin_secret = "s3"' in main
    ws = files["janus.transport.websockets.jcfg"]
    assert f'admin_ws_unix = "{tmp_path / "admin.sock"}"' in ws
