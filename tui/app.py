"""The quorumfs file manager: a Textual app over one client, failing over between peers.

``run_tui(client)`` is what ``qfs tui`` calls. The app gets a client object and nothing else;
every request goes through a Connection that switches to another live peer when the current
one stops answering.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane
from textual.worker import WorkerState

from peer.client.api_client import Client, QfsError, printable
from tui.connection import PROBE_TIMEOUT, Connection
from tui.messages import ClusterSnapshot, ClusterUnreachable, PeerSwitched
from tui.screens.help import HelpScreen
from tui.widgets.cluster_view import ClusterView
from tui.widgets.files_view import FilesView

POLL_INTERVAL = 1.0  # seconds between membership polls
STALL_AFTER = 3.0  # a poll running this long gets its peer probed (a stopped peer hangs)


class QfsApp(App[int]):
    """Files and cluster tabs over one Connection; ``clock`` stamps the membership log."""

    CSS_PATH = "app.tcss"
    TITLE = "quorumfs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "show_tab('files-tab')", "Files"),
        Binding("2", "show_tab('cluster-tab')", "Cluster"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, client: Client, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.connection = Connection(client, on_switch=self._switched)
        self._reachable: bool | None = None
        self._poll_started: float | None = None  # monotonic start of the running poll
        # Kept by reference: App.query_one searches the active screen, which is a dialog
        # whenever one is open, and results keep arriving then.
        self.files = FilesView(self.connection, id="files-view")
        self.cluster_view = ClusterView(clock, id="cluster-view")
        self.status = Static(id="status")
        self.tabs = TabbedContent(initial="files-tab")

    def compose(self) -> ComposeResult:
        yield Header()
        with self.tabs:
            with TabPane("Files", id="files-tab"):
                yield self.files
            with TabPane("Cluster", id="cluster-tab"):
                yield self.cluster_view
        yield self.status
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = self.connection.base_url
        self._show_status(Text(f"connecting to {self.connection.base_url}…", style="dim"))
        self._start_poll()
        self.set_interval(POLL_INTERVAL, self._tick)

    def action_show_tab(self, tab: str) -> None:
        if self.screen is not self.files.screen:
            return  # a dialog is open: it keeps the keys
        # Focus inside the target pane first: focus left in a pane being hidden would move to
        # a sibling in that pane, and TabbedContent follows focus back to it.
        self._main_widget(tab).focus()
        self.tabs.active = tab

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._main_widget(event.pane.id or "").focus()

    def _main_widget(self, tab: str) -> Widget:
        """What has the focus when ``tab`` opens."""
        return self.cluster_view.members if tab == "cluster-tab" else self.files.table

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # Membership polling and failover

    def _tick(self) -> None:
        """Start the next poll; if the last one hangs (a stopped peer), probe that peer."""
        if self._poll_started is None:
            self._start_poll()
        elif time.monotonic() - self._poll_started > STALL_AFTER and not self._busy("probe"):
            self.probe_peer(self.connection.client)

    def _start_poll(self) -> None:
        self._poll_started = time.monotonic()
        self.poll_cluster()

    def _busy(self, group: str) -> bool:
        return any(
            w.group == group and w.state in (WorkerState.PENDING, WorkerState.RUNNING)
            for w in self.workers
        )

    @work(thread=True, exclusive=True, group="cluster", description="membership poll")
    def poll_cluster(self) -> None:
        """Ask the current peer for the member list (failing over if it is gone)."""
        try:
            url, snapshot = self.connection.cluster()
        except QfsError as error:
            self.post_message(ClusterUnreachable(error.detail or str(error)))
            return
        self.post_message(ClusterSnapshot(url, snapshot))

    @work(thread=True, exclusive=True, group="probe", description="probing a slow peer")
    def probe_peer(self, client: Client) -> None:
        """The poll of ``client`` hangs: if its /healthz does not answer either, fail over.

        Requests already waiting on the hung peer wait out the client's own timeout; the
        next ones go to the new peer.
        """
        if client.healthy(timeout=PROBE_TIMEOUT):
            return  # slow but alive: let the poll finish
        try:
            self.connection.fail_over(client)
        except QfsError as error:
            self.post_message(ClusterUnreachable(error.detail or str(error)))

    def _switched(self, old: str, new: str) -> None:
        """Called in a worker thread by the Connection when it changed peers."""
        self.post_message(PeerSwitched(old, new))

    def on_cluster_snapshot(self, message: ClusterSnapshot) -> None:
        self._poll_started = None
        if message.url != self.connection.base_url:
            return  # a late answer from a peer given up on
        cluster = message.cluster
        self.cluster_view.show(message.url, cluster)
        states = {m["name"]: m["state"] for m in cluster.get("members") or []}
        n = int((cluster.get("config") or {}).get("n") or 3)
        self.files.cluster_changed(states, n)
        alive = sum(state == "alive" for state in states.values())
        me, url = printable(cluster.get("self")), printable(message.url)
        self.sub_title = f"{me} · {url}"
        self._show_status(
            Text.assemble(
                ("● ", "green"),
                (me, "bold"),
                f" {url}  ·  {alive}/{len(states)} peers alive",
            )
        )
        if self._reachable is False:
            self.notify(f"reconnected: talking to {cluster.get('self')} at {message.url}")
            self.files.refresh_listing()
        self._reachable = True

    def on_cluster_unreachable(self, message: ClusterUnreachable) -> None:
        self._poll_started = None
        self.cluster_view.show_unreachable(message.error)
        self._show_status(
            Text.assemble(
                ("✖ no live peer: ", "bold red"),
                f"{printable(message.error)}  ·  retrying every {POLL_INTERVAL:g}s",
            )
        )
        if self._reachable is not False:
            self.notify(
                "no peer answers; the file manager keeps trying", severity="error", timeout=6
            )
        self._reachable = False

    def on_peer_switched(self, message: PeerSwitched) -> None:
        self.notify(
            f"{message.old} stopped answering; now talking to {message.new}",
            severity="warning",
            timeout=6,
        )
        self.cluster_view.log_events(
            [f"failover: {message.old} unreachable, switched to {message.new}"]
        )
        self.sub_title = printable(message.new)
        self._poll_started = None  # poll the new peer now, not after the old one times out
        self.files.refresh_listing()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification, escaped: most carry a path or an error a peer sent."""
        super().notify(
            printable(message),
            title=printable(title),
            severity=severity,
            timeout=timeout,
            markup=False,
        )

    def _show_status(self, text: Text) -> None:
        self.status.update(text)


def run_tui(client: Client) -> int:
    """Run the file manager on ``client`` until the user quits; the exit status."""
    result: Any = QfsApp(client).run()
    return int(result or 0)
