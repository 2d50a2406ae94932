"""The samples of combined servers' members on ``/metrics`` (children/combined_status.py).

Per member of each combined server: whether it is up for this worker's sessions (1 ``up``,
else 0: ``down``, ``starting`` or ``idle``) and the tools the sessions' last lists showed.
Read at scrape time only; nothing per message.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily


def member_samples(combined: dict[str, dict[str, dict]]) -> Iterator:
    """``combined``: combined server label -> member -> its /status entry."""
    up = GaugeMetricFamily("mcp_proxy_combined_member_up", "1 when a session of the "
                           "combined server has the member up", labels=["server", "member"])
    tools = GaugeMetricFamily("mcp_proxy_combined_member_tools", "The member's tools as the "
                              "combined server's sessions last listed them",
                              labels=["server", "member"])
    for server, members in sorted(combined.items()):
        for member, shown in members.items():
            up.add_metric([server, member], 1 if shown["state"] == "up" else 0)
            tools.add_metric([server, member], shown["tools"])
    yield up
    yield tools
