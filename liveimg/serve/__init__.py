"""``liveimg serve``: serve builds to diskless machines (HTTP; TFTP and DHCP through dnsmasq).

:mod:`~liveimg.serve.catalog` decides what is served where and writes the menus;
:mod:`~liveimg.serve.http` is the HTTP server; :mod:`~liveimg.serve.dnsmasq` runs dnsmasq;
:mod:`~liveimg.serve.service` ties them together until stopped; :mod:`~liveimg.serve.configs`
writes the same as nginx, dnsmasq or Kea configuration for a production server.
"""

from liveimg.serve.catalog import BiosLoader, Plan, ServedBuild, describe, load_builds, plan
from liveimg.serve.configs import print_config
from liveimg.serve.dnsmasq import DhcpMode
from liveimg.serve.service import ServeOptions, serve

__all__ = [
    "BiosLoader",
    "DhcpMode",
    "Plan",
    "ServeOptions",
    "ServedBuild",
    "describe",
    "load_builds",
    "plan",
    "print_config",
    "serve",
]
