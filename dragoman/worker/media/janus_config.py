"""The configuration a node's Janus runs with, generated from Settings (pure).

Only what dragoman uses is loaded: the NoSIP plugin (WebRTC ↔ plain RTP) and the WebSocket
transport, bound to a Unix socket in the node's runtime folder so the worker's control
connection needs no port and is reachable by nothing else. No STUN server (nothing waits
on a gather): callers reach the node's host candidates (or its 1:1 NAT address), or relay
through TURN from their side.
"""

from __future__ import annotations

import glob
from pathlib import Path

from dragoman.config import Settings

PLUGINS = ("libjanus_nosip.so",)
TRANSPORTS = ("libjanus_websockets.so",)


def find_lib_dir(settings: Settings) -> Path:
    """Janus' module root (with plugins/ and transports/), as Debian installs it."""
    if settings.janus_lib_dir is not None:
        return settings.janus_lib_dir
    found = sorted(glob.glob("/usr/lib/*/janus/plugins/libjanus_nosip.so"))
    found += sorted(glob.glob("/usr/lib/janus/plugins/libjanus_nosip.so"))
    if not found:
        raise FileNotFoundError(
            "Janus' NoSIP plugin was not found: install the Debian package 'janus' "
            "(scripts/setup.sh does) or set DRAGOMAN_JANUS_LIB_DIR"
        )
    return Path(found[0]).parent.parent


def _disable_others(folder: Path, keep: tuple[str, ...]) -> str:
    """Janus loads every module in a folder unless told not to."""
    if not folder.is_dir():
        return ""
    return ",".join(sorted(p.name for p in folder.glob("libjanus_*.so") if p.name not in keep))


def _q(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def janus_files(
    settings: Settings, runtime_dir: Path, ws_socket: Path, admin_socket: Path, admin_secret: str
) -> dict[str, str]:
    """File name → content of a config folder for ``janus -C DIR/janus.jcfg -F DIR``.

    The Admin API (used to count live handles) listens on its own Unix socket and needs a
    secret made fresh for each start."""
    lib = find_lib_dir(settings)
    nat = ["ignore_mdns = true"]
    if settings.media_interfaces:
        nat.append(f"ice_enforce_list = {_q(settings.media_interfaces)}")
    if settings.media_public_ip:
        nat.append(f"nat_1_1_mapping = {_q(settings.media_public_ip)}")
    nat_lines = "\n".join("\t" + line for line in nat)
    janus = f"""general: {{
\tconfigs_folder = {_q(runtime_dir)}
\tplugins_folder = {_q(lib / "plugins")}
\ttransports_folder = {_q(lib / "transports")}
\tevents_folder = {_q(lib / "events")}
\tloggers_folder = {_q(lib / "loggers")}
\tdebug_level = {settings.janus_log_level}
\tdebug_colors = false
\tsession_timeout = 60
\tevent_loops = {settings.janus_event_loops}
\thide_dependencies = true
\tserver_name = "dragoman-{settings.node_id}"
\tadmin_secret = {_q(admin_secret)}
}}
certificates: {{
}}
media: {{
\tipv6 = false
\trtp_port_range = {_q(settings.media_port_range)}
}}
nat: {{
{nat_lines}
}}
plugins: {{
\tdisable = {_q(_disable_others(lib / "plugins", PLUGINS))}
}}
transports: {{
\tdisable = {_q(_disable_others(lib / "transports", TRANSPORTS))}
}}
loggers: {{
\tdisable = {_q(_disable_others(lib / "loggers", ()))}
}}
events: {{
\tbroadcast = false
\tdisable = {_q(_disable_others(lib / "events", ()))}
}}
"""
    websockets = f"""general: {{
\tjson = "compact"
\tws = true
\tws_unix = {_q(ws_socket)}
\twss = false
}}
admin: {{
\tadmin_ws = true
\tadmin_ws_unix = {_q(admin_socket)}
\tadmin_wss = false
}}
"""
    nosip = f"""general: {{
\tlocal_ip = "127.0.0.1"
\trtp_port_range = {_q(settings.media_plain_port_range)}
\tevents = false
}}
"""
    return {
        "janus.jcfg": janus,
        "janus.transport.websockets.jcfg": websockets,
        "janus.plugin.nosip.jcfg": nosip,
    }
