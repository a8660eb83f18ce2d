"""The remote directory tree: loads a directory's subdirectories when it is first expanded."""

from __future__ import annotations

from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from tui.format import shown
from tui.messages import OpenDirectory, TreeExpanded


def child_path(parent: str, name: str) -> str:
    """``("/", "a")`` -> ``/a``; ``("/a", "b")`` -> ``/a/b``."""
    return parent.rstrip("/") + "/" + name


class DirTree(Tree[str]):
    """Directories only; each node's data is its path. Selecting a node opens it."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("/", data="/", id=id)
        self.show_root = True
        self.guide_depth = 2
        self._loaded: set[str] = set()
        self._reveal: str | None = None  # the directory the cursor is headed for

    def on_mount(self) -> None:
        self.root.expand()

    def reload(self) -> None:
        """Forget what was loaded and ask again for every expanded directory."""
        self._loaded.clear()
        for node in [self.root, *self._expanded(self.root)]:
            self.post_message(TreeExpanded(node.data or "/"))

    def _expanded(self, node: TreeNode[str]) -> list[TreeNode[str]]:
        found = []
        for child in node.children:
            if child.is_expanded:
                found += [child, *self._expanded(child)]
        return found

    def reveal(self, path: str) -> None:
        """Expand the tree down to ``path`` and put the cursor on it (loading on the way)."""
        self._reveal = path
        self._continue_reveal()

    def _continue_reveal(self) -> None:
        if self._reveal is None:
            return
        node = self._deepest(self.root, self._reveal)
        if node.data == self._reveal:
            self._reveal = None
            self.move_cursor(node)
        elif node.data in self._loaded:
            self._reveal = None  # the directory is not (or no longer) there
            self.move_cursor(node)
        else:
            node.expand()  # its children load, then set_children continues from there

    def _deepest(self, node: TreeNode[str], path: str) -> TreeNode[str]:
        """The node of ``path`` or of its deepest ancestor in the tree."""
        for child in node.children:
            if child.data is not None and (path + "/").startswith(child.data.rstrip("/") + "/"):
                return self._deepest(child, path)
        return node

    def set_children(self, path: str, names: list[str]) -> None:
        """Show ``names`` as the subdirectories of ``path`` (if that node is still there)."""
        node = self._deepest(self.root, path)
        if node.data != path:
            return
        self._loaded.add(path)
        current = {child.data: child for child in node.children}
        wanted = [child_path(path, name) for name in sorted(names)]
        if list(current) != wanted:
            expanded = {p for p, child in current.items() if child.is_expanded}
            node.remove_children()
            for name, sub in zip(sorted(names), wanted, strict=True):
                added = node.add(shown(name), data=sub)
                if sub in expanded:
                    added.expand()
        self._continue_reveal()

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[str]) -> None:
        event.stop()
        path = event.node.data or "/"
        if path not in self._loaded:
            self.post_message(TreeExpanded(path))

    def on_tree_node_selected(self, event: Tree.NodeSelected[str]) -> None:
        event.stop()
        self.post_message(OpenDirectory(event.node.data or "/"))
