"""How an `overcast.Cluster` shows itself: repr() and the notebook's HTML table."""

from __future__ import annotations

import html
from typing import Any

from overcast.dashboardcred import redact


def text_repr(name: Any, account: str | None, state: str, info: dict[str, Any],
              n_workers: int, dashboard_link: str | None) -> str:
    return (f"Cluster(name={name!r}, account={account!r}, state={state!r}, "
            f"workers={info.get('workers_ready', 0)}/{n_workers}, "
            # repr() ends up in logs and tracebacks: the link without its credential.
            f"dashboard={redact(dashboard_link) if dashboard_link else None!r})")


def html_repr(name: Any, account: str | None, state: str, info: dict[str, Any],
              n_workers: int, dashboard_link: str | None) -> str:
    link = dashboard_link
    rows = [("Name", html.escape(str(name))),
            ("Account", html.escape(str(account))),
            ("State", html.escape(state)),
            ("Workers", f"{info.get('workers_ready', 0)} / {n_workers}"),
            ("Region", html.escape(str(info.get("region") or ""))),
            ("Dashboard", f'<a href="{html.escape(link)}" target="_blank">'
                          f"{html.escape(link)}</a>" if link else "")]
    body = "".join(f'<tr><th style="text-align:left">{k}</th>'
                   f'<td style="text-align:left">{v}</td></tr>' for k, v in rows)
    return f"<div><strong>overcast.Cluster</strong><table>{body}</table></div>"
